package dev.edgetrim.demo

import dev.edgetrim.core.Artifact
import dev.edgetrim.core.ChunkTimeline
import dev.edgetrim.core.Contract
import dev.edgetrim.core.Overlay
import dev.edgetrim.core.Preprocess
import dev.edgetrim.core.Resample.RgbImage

/**
 * One vision-encoder run, what `edgetrim run ARTIFACT --image` reports: the P views (S x S), the K kept cells (in
 * `positions` order), the budget of every partition (summing to K), the inference time after warm-up, the plan and
 * the scheduler's events.
 */
class VisionResult(
    val views: List<RgbImage>, val cells: List<Overlay.KeptCell>, val side: Int, val budgets: List<Int>,
    val milliseconds: Double, val plan: String, val timeline: List<ChunkTimeline.Event>
)

/**
 * Preprocesses [image] as the manifest says (the core's AnyRes `Preprocess`: pixel_values [1, P, 3, S, S]), loads the
 * resident chunks, runs the vision pipeline once (tokens [1, K, D], positions [1, K], partition_budgets [1, P]) and
 * maps the kept positions to cells of the views.
 */
fun encodeImage(artifact: Artifact, image: RgbImage, budgetMB: Double?, threads: Int): VisionResult {
    val pp = artifact.manifest().preprocessing()
    val preprocess = Preprocess(pp.imageSize(), pp.grid()[0], pp.grid()[1], pp.mean(), pp.std())
    val pixels = preprocess.pixelValues(image)
    Pipelines.open(artifact, Contract.VISION, budgetMB, threads).use { pipeline ->
        pipeline.warm(null)
        val start = System.nanoTime()
        val out = pipeline.run(mapOf(Contract.PIXEL_VALUES to pixels))
        val milliseconds = (System.nanoTime() - start) / 1e6
        val positions = out.getValue(Contract.POSITIONS).longs().map { it.toInt() }
        return VisionResult(
            views = preprocess.views(image),
            cells = Overlay.keptCells(positions, pp.patchesPerSide()),
            side = pp.patchesPerSide(),
            budgets = out.getValue(Contract.PARTITION_BUDGETS).longs().map { it.toInt() },
            milliseconds = milliseconds,
            plan = pipeline.plan().summary(),
            timeline = pipeline.timeline().events()
        )
    }
}
