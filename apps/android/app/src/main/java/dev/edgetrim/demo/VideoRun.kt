package dev.edgetrim.demo

import dev.edgetrim.core.Artifact
import dev.edgetrim.core.ArtifactException
import dev.edgetrim.core.ChunkTimeline
import dev.edgetrim.core.Contract
import dev.edgetrim.core.LeapRule
import dev.edgetrim.core.Npy
import dev.edgetrim.core.Resample.RgbImage
import dev.edgetrim.core.Sampler
import dev.edgetrim.core.Tensor
import java.io.File
import java.util.Random
import java.util.function.IntConsumer

/**
 * A sampling plan: [steps] >= 1, the first [mergeSteps] (0..steps) with TDTM, and a fixed leap at [leapAt]
 * (1..steps - 1) or adaptive LPL from [lplMinSteps] (1..steps - 1), at most one of the two.
 */
data class VideoPlan(val steps: Int, val mergeSteps: Int, val leapAt: Int?, val lplMinSteps: Int?)

/** One video run: latent tiles [channel][frame] (grey, H x W), the denoiser's events, a summary line. */
class VideoResult(val tiles: List<List<RgbImage>>, val timeline: List<ChunkTimeline.Event>, val summary: String)

/**
 * A video-denoiser artifact's caption and denoiser pipelines as `edgetrim run` drives them (runtime/video.py):
 * caption embeddings [L, C_cap] and the null caption projected by the caption pipeline, then the core's rectified-flow
 * sampler (TDTM, fixed or adaptive LPL) over the denoiser pipeline with classifier-free guidance, the conditional and
 * unconditional halves in batches of the export's batch. Sessions are lean, as the Python runtime opens them.
 */
class VideoRun(private val artifact: Artifact, private val budgetMB: Double?, private val threads: Int) {
    private val video = artifact.manifest().video()
    private val length = video.captionLength()
    private val channels = video.captionChannels()
    private val batch = video.batch()

    /**
     * Samples a latent [C_in, T, H, W] from seeded noise. [captionFile]: caption embeddings `.npy` [L', C_cap] or
     * [1, L', C_cap] (L' <= L, zero-padded and masked); null: a seeded random stand-in, as `edgetrim run` without a
     * caption. [onStep] sees each evaluated step (0-based) on the sampling thread.
     */
    fun sample(captionFile: File?, plan: VideoPlan, seed: Int, onStep: (Int) -> Unit): VideoResult {
        Sampler.checkPlan(plan.steps, plan.mergeSteps, plan.leapAt)
        val rule = plan.lplMinSteps?.let { minSteps ->
            require(plan.leapAt == null) { "a fixed leap and adaptive LPL both set: pick one" }
            require(minSteps in 1 until plan.steps) { "LPL from step $minSteps is outside 1..${plan.steps - 1}" }
            val defaults = LeapRule()
            LeapRule(minSteps, defaults.patience(), defaults.threshold())
        }
        val nullCaption = Npy.read(artifact.dataFile(Contract.NULL_CAPTION)).floats()
        if (nullCaption.size != length * channels) {
            throw ArtifactException("the null caption holds ${nullCaption.size} values, not $length x $channels: re-export the artifact")
        }
        val (caption, mask) = if (captionFile != null) fitCaption(captionFile) else standIn(seed)
        Pipelines.open(artifact, Contract.CAPTION, null, threads, lean = true).use { captioner ->
            Pipelines.open(artifact, Contract.DENOISER, budgetMB, threads, inputs = DENOISER_INPUTS, lean = true).use { denoiser ->
                // [2, L, C]: the conditional then the null caption, projected in batches of the export's batch.
                val both = caption + nullCaption
                val projected = (0 until 2 step batch).flatMap { first ->
                    val slice = both.copyOfRange(first * length * channels, (first + batch) * length * channels)
                    captioner.run(mapOf(Contract.CAPTION_EMBEDS to Tensor.ofFloats(intArrayOf(batch, length, channels), slice)))
                        .getValue(Contract.CAPTION_TOKENS).floats().asList()
                }.toFloatArray()
                val width = projected.size / (2 * length)
                val latentShape = video.latentShape().drop(1)  // [C_in, T, H, W] of one sample
                val latentCount = latentShape.fold(1) { a, b -> a * b }
                val velocity = Sampler.Velocity<ArtifactException> { z, t, function ->
                    val halves = (0 until 2 step batch).flatMap { first ->
                        val feeds = mapOf(
                            Contract.LATENT to Tensor.ofFloats((listOf(batch) + latentShape).toIntArray(), repeat(z, batch)),
                            Contract.TIMESTEP to Tensor.ofFloats(intArrayOf(batch), FloatArray(batch) { t.toFloat() }),
                            Contract.CAPTION_TOKENS to Tensor.ofFloats(
                                intArrayOf(batch, length, width),
                                projected.copyOfRange(first * length * width, (first + batch) * length * width)),
                            Contract.CAPTION_MASK to Tensor.ofFloats(intArrayOf(batch, length), repeat(mask, batch))
                        )
                        val out = denoiser.run(feeds, function).getValue(Contract.VELOCITY).floats()  // [B, C_out, T, H, W]
                        val perSample = out.size / batch
                        (0 until batch).map { b -> out.copyOfRange(b * perSample, b * perSample + latentCount) }  // first C_in
                    }
                    Sampler.guided(halves[1], halves[0], video.scheduler().cfgScale())
                }
                val random = Random(seed.toLong())
                val noise = FloatArray(latentCount) { random.nextGaussian().toFloat() }
                val sampled = Sampler.sample(
                    velocity, noise, Sampler.schedule(video, plan.steps), plan.mergeSteps, plan.leapAt, rule,
                    Sampler.NUM_TIMESTEPS, IntConsumer { onStep(it) }
                )
                val summary = "%d of %d steps (%d tdtm), leapt at %s, %.1f s; %s".format(
                    sampled.stepsRun(), plan.steps, sampled.functions().count { it == Contract.TDTM },
                    sampled.leapStep()?.toString() ?: "-", sampled.stepMs().sum() / 1000, denoiser.plan().summary()
                )
                return VideoResult(tiles(sampled.latent(), latentShape), denoiser.timeline().events(), summary)
            }
        }
    }

    /** A caption file [L', C] or [1, L', C] (1 <= L' <= L) zero-padded to [L, C], and its mask [L] (1 for its rows). */
    private fun fitCaption(file: File): Pair<FloatArray, FloatArray> {
        val npy = Npy.read(file.toPath())
        val shape = npy.shape().toList().let { if (it.size == 3 && it[0] == 1) it.drop(1) else it }
        require(shape.size == 2 && shape[1] == channels && shape[0] in 1..length) {
            "the caption file has shape ${npy.shape().toList()}: pass caption embeddings [1..$length, $channels] (T5 features)"
        }
        return npy.floats().copyOf(length * channels) to FloatArray(length) { if (it < shape[0]) 1f else 0f }
    }

    /** A seeded stand-in for T5 features, 0.1 x standard normal [L, C] with every token kept (runtime/video.py). */
    private fun standIn(seed: Int): Pair<FloatArray, FloatArray> {
        val random = Random(seed + 1L)
        return FloatArray(length * channels) { random.nextGaussian().toFloat() * 0.1f } to FloatArray(length) { 1f }
    }

    private fun repeat(values: FloatArray, times: Int) = FloatArray(values.size * times) { values[it % values.size] }

    /** One grey tile per channel and frame, each channel min-max normalized over all its frames. */
    private fun tiles(latent: FloatArray, shape: List<Int>): List<List<RgbImage>> {
        val (c, t, h, w) = shape
        return (0 until c).map { ch ->
            val channel = latent.copyOfRange(ch * t * h * w, (ch + 1) * t * h * w)
            val lo = channel.min()
            val span = maxOf(channel.max() - lo, 1e-12f)
            (0 until t).map { frame ->
                val grey = ByteArray(h * w * 3) { i ->
                    ((channel[frame * h * w + i / 3] - lo) / span * 255).toInt().coerceIn(0, 255).toByte()
                }
                RgbImage(w, h, grey)
            }
        }
    }

    private companion object {
        /** What the caller feeds the denoiser pipeline; the rest (t, t_mlp, hidden_XX) flows between its chunks. */
        val DENOISER_INPUTS = listOf(Contract.LATENT, Contract.TIMESTEP, Contract.CAPTION_TOKENS, Contract.CAPTION_MASK)
    }
}
