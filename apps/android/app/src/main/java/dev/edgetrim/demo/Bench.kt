package dev.edgetrim.demo

import dev.edgetrim.core.Artifact
import dev.edgetrim.core.ChunkTimeline
import dev.edgetrim.core.Contract
import dev.edgetrim.core.MemoryPlan
import dev.edgetrim.core.MemoryPlanner
import dev.edgetrim.core.Tensor
import java.util.Random
import org.json.JSONArray
import org.json.JSONObject

/**
 * `edgetrim bench` on the phone for the artifacts it streams, vision and text encoders (one pipeline fed from its
 * first chunk; runtime/bench.py), writing the same bench.json keys: `meta`, `summary`, `results` (one record per mode).
 *
 * Modes: `resident` (every chunk loaded once and kept, default sessions), `resident-lean` (the same with lean
 * sessions), `streaming` (the memory budget, chunk i+1 loading while chunk i runs) and `naive` (the budget, load then
 * run). The Python bench gives each mode a fresh process for its own peak RSS; here the modes share one process, so
 * the peak (VmHWM) is reset before each mode (`/proc/self/clear_refs`), and they run from the smallest expected peak
 * to the largest so that a kernel refusing the reset still reports each mode's own peak or an overestimate.
 */
object Bench {
    /** The kinds `edgetrim bench` streams. */
    val KINDS = listOf(Contract.VISION_ENCODER, Contract.TEXT_ENCODER)
    val MODES = listOf("resident", "resident-lean", "streaming", "naive")
    private val RUN_ORDER = listOf("naive", "streaming", "resident-lean", "resident")
    private const val MB = 1 shl 20

    /** The budget `edgetrim bench` defaults to: the two largest chunks plus 5%. */
    fun defaultBudgetMB(chunkBytes: List<Long>): Double = chunkBytes.sorted().takeLast(2).sum() * 1.05 / MB

    /**
     * The four modes, [repeats] timed invocations each after a first one; [budgetMB] null: [defaultBudgetMB]. [path]
     * is what `meta.artifact` names; [progress] sees each mode as it starts. The report, as bench.json holds it.
     */
    fun run(artifact: Artifact, path: String, budgetMB: Double?, repeats: Int, threads: Int, progress: (String) -> Unit): JSONObject {
        val chunks = artifact.chunks()
        val budget = budgetMB ?: defaultBudgetMB(chunks.map { it.bytes() })
        require(repeats >= 1) { "`repeats` $repeats must be at least 1: e.g. 20" }
        MemoryPlanner.plan(artifact.pipeline(null), artifact.manifest(), budget, true)  // a budget below the largest chunk fails here, before any run
        val results = RUN_ORDER.associateWith { mode ->
            progress(mode)
            measure(mode, artifact, budget, repeats, threads)
        }
        val meta = JSONObject()
            .put("artifact", path)
            .put("target", artifact.target())
            .put("budget_mb", budget)
            .put("repeats", repeats)
            .put("random_weights", artifact.manifest().source().randomWeights())
            .put("chunk_sizes", JSONArray(chunks.map { JSONObject().put("name", it.name()).put("mb", it.bytes().toDouble() / MB) }))
        val ordered = JSONObject()
        for (mode in MODES) ordered.put(mode, results.getValue(mode))
        return JSONObject()
            .put("meta", meta)
            .put("summary", summarize(results, chunks.sumOf { it.bytes() }, chunks.size))
            .put("results", ordered)
    }

    /**
     * One mode (bench.py's worker): seeded standard-normal feeds of the first chunk's inputs (cast like numpy's
     * `astype`), the peak reset, warm-up and a first invocation, then [repeats] timed ones; times in ms since the
     * scheduler was created.
     */
    private fun measure(mode: String, artifact: Artifact, budgetMB: Double, repeats: Int, threads: Int): JSONObject {
        val random = Random(0)
        val feeds = artifact.chunks()[0].inputs().associate { spec ->
            val shape = spec.shape().toIntArray()
            val count = shape.fold(1) { a, b -> a * b }
            spec.name() to when (spec.dtype()) {
                "float32" -> Tensor.ofFloats(shape, FloatArray(count) { random.nextGaussian().toFloat() })
                "int64" -> Tensor.ofLongs(shape, LongArray(count) { random.nextGaussian().toLong() })
                "int32" -> Tensor.ofInts(shape, IntArray(count) { random.nextGaussian().toInt() })
                else -> throw IllegalArgumentException("input ${spec.name()} is ${spec.dtype()}: the app feeds float32, int64 or int32")
            }
        }
        System.gc()
        ProcessMemory.resetPeak()
        val baseline = ProcessMemory.peakMB()
        val budget = if (mode.startsWith("resident")) null else budgetMB
        val scheduler = Pipelines.open(artifact, null, budget, threads, lean = mode != "resident", overlap = mode == "streaming")
        val latencies = mutableListOf<Double>()
        val firstMs: Double
        val events: List<ChunkTimeline.Event>
        val plan: MemoryPlan
        val t0 = scheduler.timeline().now()
        try {
            scheduler.warm(null)
            scheduler.run(feeds, null)
            firstMs = (scheduler.timeline().now() - t0) * 1e3
            repeat(repeats) {
                val start = System.nanoTime()
                scheduler.run(feeds, null)
                latencies += (System.nanoTime() - start) / 1e6
            }
            events = scheduler.timeline().events()
            plan = scheduler.plan()
        } finally {
            scheduler.close()
        }
        val spans = events.map { e ->
            JSONObject()
                .put("chunk", e.chunk())
                .put("kind", if (e.kind() == ChunkTimeline.Kind.LOAD) "load" else "compute")
                .put("start_ms", (e.start() - t0) * 1e3)
                .put("end_ms", (e.end() - t0) * 1e3)
                .put("invocation", e.invocation())
        }
        val perChunk = JSONObject()
        for (chunk in artifact.chunks()) {
            val mine = spans.filter { it.getString("chunk") == chunk.name() }
            val loads = mine.filter { it.getString("kind") == "load" }.map(::durationMs)
            val computes = mine.filter { it.getString("kind") == "compute" }.map(::durationMs)
            perChunk.put(chunk.name(), JSONObject()
                .put("load_ms", if (loads.isEmpty()) 0.0 else loads.average())
                .put("loads", loads.size)
                .put("compute_ms", median(computes)))
        }
        return JSONObject()
            .put("mode", mode)
            .put("lean_sessions", mode != "resident")
            .put("load_overlap_fraction", loadOverlap(spans))
            .put("budget_mb", budget ?: JSONObject.NULL)
            .put("plan", JSONObject()
                .put("resident", JSONArray(plan.resident()))
                .put("streamed", JSONArray(plan.streamed()))
                .put("overlap", plan.overlap()))
            .put("first_invocation_ms", firstMs)
            .put("latency_ms", latencies.average())
            .put("latency_median_ms", median(latencies))
            .put("repeats", repeats)
            .put("peak_rss_mb", ProcessMemory.peakMB())
            .put("baseline_rss_mb", baseline)
            .put("per_chunk", perChunk)
            .put("events", JSONArray(spans))
    }

    /** Share of load time (after warm-up) spent while a chunk was computing: load hidden behind compute. */
    private fun loadOverlap(events: List<JSONObject>): Double {
        val loads = events.filter { it.getString("kind") == "load" && it.getInt("invocation") >= 1 }
        val computes = events.filter { it.getString("kind") == "compute" }
        val total = loads.sumOf(::durationMs)
        if (total <= 0) return 1.0
        var hidden = 0.0
        for (load in loads) for (c in computes) {
            hidden += maxOf(0.0, minOf(load.getDouble("end_ms"), c.getDouble("end_ms")) - maxOf(load.getDouble("start_ms"), c.getDouble("start_ms")))
        }
        return hidden / total
    }

    private fun summarize(results: Map<String, JSONObject>, artifactBytes: Long, chunks: Int): JSONObject {
        val (res, lean, stream, naive) = MODES.map { results.getValue(it) }
        fun latency(r: JSONObject) = r.getDouble("latency_ms")
        fun peak(r: JSONObject) = r.getDouble("peak_rss_mb")
        val loadCost = latency(naive) - latency(lean)
        val hidden = if (loadCost > 0) (latency(naive) - latency(stream)) / loadCost else 1.0
        return JSONObject()
            .put("chunks", chunks)
            .put("artifact_mb", artifactBytes.toDouble() / MB)
            .put("streaming_latency_ratio", latency(stream) / latency(res))
            .put("streaming_latency_ratio_vs_lean", latency(stream) / latency(lean))
            .put("naive_latency_ratio", latency(naive) / latency(res))
            .put("streaming_peak_rss_ratio", peak(stream) / peak(res))
            .put("streaming_peak_rss_ratio_vs_lean", peak(stream) / peak(lean))
            .put("load_hidden_fraction", hidden)
            .put("load_overlap_fraction", stream.getDouble("load_overlap_fraction"))
            .put("goals", JSONObject()
                .put("peak_rss_le_40pct", peak(stream) / peak(res) <= 0.40)
                .put("latency_le_1.25x", latency(stream) / latency(res) <= 1.25)
                .put("load_hidden_ge_70pct", hidden >= 0.70))
    }

    private fun durationMs(event: JSONObject) = event.getDouble("end_ms") - event.getDouble("start_ms")

    /** Python's statistics.median. */
    private fun median(values: List<Double>): Double {
        val sorted = values.sorted()
        val mid = sorted.size / 2
        return if (sorted.size % 2 == 1) sorted[mid] else (sorted[mid - 1] + sorted[mid]) / 2
    }
}
