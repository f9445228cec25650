package dev.edgetrim.demo

import dev.edgetrim.core.Artifact
import dev.edgetrim.core.ArtifactException
import dev.edgetrim.core.Contract
import dev.edgetrim.core.EmbeddingTable
import dev.edgetrim.core.GreedyDecoder
import dev.edgetrim.core.Preprocess
import dev.edgetrim.core.Prompt
import dev.edgetrim.core.Resample.RgbImage
import dev.edgetrim.core.Tensor
import dev.edgetrim.core.TextStream
import dev.edgetrim.core.Tokenizer
import java.util.function.IntConsumer

/** A VLM answer: its text (every token, re-decoded at the end) and the timings line. */
class VlmAnswer(val text: String, val summary: String)

/**
 * A vlm artifact's three pipelines as `edgetrim run` drives them (runtime/vlm.py): image -> pixel_values
 * [1, P, 3, S, S] -> vision -> tokens [1, K, D] spliced at the template's image token -> embeddings [n, D] -> prefill
 * (padded to the smallest exported prefill length that holds them, function `prefill_<n>`) -> greedy decode (function
 * `decode` of the same chunks, one copy of the weights) over the KV cache, `present_*` outputs fed back as `past_*`.
 * All of it is the core's: Preprocess, Prompt, Tokenizer, TextStream, GreedyDecoder; this class only wires the
 * pipelines.
 */
class VlmRun(private val artifact: Artifact, private val budgetMB: Double?, private val threads: Int) {
    /**
     * Streams the answer's text through [onText] (called on the decoding thread) and returns it with the timings:
     * TTFT is image in -> first token (preprocessing, vision, prefill), measured after the resident chunks loaded.
     */
    fun generate(image: RgbImage, question: String, onText: (String) -> Unit): VlmAnswer {
        val manifest = artifact.manifest()
        val pp = manifest.preprocessing()
        val llm = manifest.llm()
        val template = Prompt(llm.template() ?: throw ArtifactException("the manifest has no llm.template: re-export the artifact"))
        val imageToken: Int = llm.imageTokenID()
            ?: throw ArtifactException("the manifest has no llm.image_token_id: re-export the artifact")
        val tokenizer = Tokenizer.read(artifact.dataFile(Contract.TOKENIZER))
        val embedding = EmbeddingTable.open(artifact)  // [V, D], memory-mapped; int8 rows dequantized
        val preprocess = Preprocess(pp.imageSize(), pp.grid()[0], pp.grid()[1], pp.mean(), pp.std())
        val layers = llm.numLayers()
        val pasts = (0 until layers).flatMap { Contract.pastNames(it) }
        val presents = (0 until layers).flatMap { Contract.presentNames(it) }
        Pipelines.open(artifact, Contract.VISION, budgetMB, threads).use { vision ->
            Pipelines.open(
                artifact, Contract.PREFILL, budgetMB, threads,
                inputs = listOf(Contract.INPUTS_EMBEDS, Contract.LAST_INDEX), outputs = listOf(Contract.LOGITS) + presents,
                function = Contract.prefillFunction(llm.prefillLength())
            ).use { prefill ->
                Pipelines.open(
                    artifact, Contract.DECODE, budgetMB, threads,
                    inputs = listOf(Contract.INPUTS_EMBEDS, Contract.POSITION) + pasts,
                    outputs = listOf(Contract.LOGITS) + presents, function = Contract.DECODE
                ).use { decode ->
                    vision.warm(null)
                    prefill.warm(null)
                    decode.warm(null)
                    val start = System.nanoTime()
                    val visual = vision.run(mapOf(Contract.PIXEL_VALUES to preprocess.pixelValues(image)))
                        .getValue(Contract.TOKENS)  // [1, K, D]
                    val visionSeconds = (System.nanoTime() - start) / 1e9
                    val ids = template.ids(question, imageToken, tokenizer)
                    val embeds = Prompt.spliceVisual(ids, visual, imageToken, embedding)  // [n, D]
                    fun index(value: Int) = Tensor.ofLongs(intArrayOf(1), longArrayOf(value.toLong()))
                    fun nextCaches(out: Map<String, Tensor>) = pasts.zip(presents).associate { (past, present) -> past to out.getValue(present) }
                    val decoder = GreedyDecoder<Map<String, Tensor>>(
                        llm.prefillLengths(), llm.maxLength(), embedding,
                        GreedyDecoder.Prefill { inputsEmbeds, lastIndex, prefillLength ->
                            val out = prefill.run(
                                mapOf(Contract.INPUTS_EMBEDS to inputsEmbeds, Contract.LAST_INDEX to index(lastIndex)),
                                Contract.prefillFunction(prefillLength)
                            )
                            GreedyDecoder.Output(out.getValue(Contract.LOGITS), nextCaches(out))
                        },
                        GreedyDecoder.Decode { row, position, past ->
                            val out = decode.run(
                                past + mapOf(Contract.INPUTS_EMBEDS to row, Contract.POSITION to index(position)),
                                Contract.DECODE
                            )
                            GreedyDecoder.Output(out.getValue(Contract.LOGITS), nextCaches(out))
                        }
                    )
                    val room = llm.maxLength() - embeds.shape()[0] + 1  // new tokens the KV cache still holds
                    val stream = TextStream(tokenizer)
                    val generation = decoder.generate(
                        embeds, if (room >= 1) minOf(MAX_NEW_TOKENS, room) else MAX_NEW_TOKENS,
                        llm.eosTokenIDs().orEmpty().toSet(), IntConsumer { token -> stream.append(token)?.let(onText) }
                    )
                    val summary = "K %d, %d prompt tokens (prefill %d), TTFT %.0f ms, %.1f tokens/s, resident %.0f MB%s".format(
                        visual.shape()[1], generation.promptTokens(), generation.prefillLength(),
                        (visionSeconds + generation.ttft()) * 1000,
                        generation.decodeTokensPerSecond(), ProcessMemory.residentMB(),
                        if (manifest.source().randomWeights()) " (random weights: the text is meaningless)" else ""
                    )
                    return VlmAnswer(tokenizer.detokenize(generation.tokens()), summary)
                }
            }
        }
    }

    private companion object {
        /** New tokens per answer, as the iOS app (fewer when the KV cache is shorter). */
        const val MAX_NEW_TOKENS = 64
    }
}
