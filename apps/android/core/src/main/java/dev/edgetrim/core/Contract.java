package dev.edgetrim.core;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The contract between exporter, runtime and apps: every name an artifact uses, defined once.
 *
 * <p>Mirrors {@code edgetrim.runtime.contract} one for one, with the Python names (same values;
 * {@code apps/conformance/contract.json} pins them). Artifact kinds and their pipelines (chunk names in run order):
 * {@code vision-encoder}: vision; {@code vlm}: vision, prefill, decode (files embedding, tokenizer);
 * {@code language-model}: prefill, decode (file embedding); both with embedding_scales when the table is int8;
 * {@code video-denoiser}: caption, denoiser (depth chunks
 * hold functions plain and tdtm; file null_caption); {@code text-encoder}: text_encoder (file tokenizer);
 * {@code video-decoder}: temporal (per micro-frame chunk of latent frames; its chunks hold a function latents_k per
 * chunk length, e.g. latents_5 and a shorter last latents_2, over the same weights), spatial (per micro-batch of
 * frames).
 */
public final class Contract {
    private Contract() {}

    public static final int SCHEMA_VERSION = 1;
    public static final String MANIFEST = "manifest.json";
    public static final String REPORT = "report.json";

    // kinds, targets
    public static final String VISION_ENCODER = "vision-encoder";
    public static final String VLM = "vlm";
    public static final String LANGUAGE_MODEL = "language-model";
    public static final String VIDEO_DENOISER = "video-denoiser";
    public static final String TEXT_ENCODER = "text-encoder";
    public static final String VIDEO_DECODER = "video-decoder";
    public static final List<String> KINDS =
            List.of(VISION_ENCODER, VLM, LANGUAGE_MODEL, VIDEO_DENOISER, TEXT_ENCODER, VIDEO_DECODER);
    public static final String ONNX = "onnx";
    public static final String COREML = "coreml";
    public static final String EXECUTORCH = "executorch";
    public static final List<String> TARGETS = List.of(ONNX, COREML, EXECUTORCH);
    /** Target -> the suffix of its program files. */
    public static final Map<String, String> PROGRAM_SUFFIX = ordered(ONNX, ".onnx", EXECUTORCH, ".pte", COREML, ".mlpackage");
    /** {@code chunk.optimized}: saved after ONNX Runtime's extended optimizations. */
    public static final String ORT_EXTENDED = "ort-extended";
    // chunk.quantization: how a chunk's weights are stored (absent: float); "dynamic": int8 activations per run too
    /** int8 weights per output channel, int8 activations per run. */
    public static final String INT8_DYNAMIC = "int8-dynamic";
    /** int4 weights in blocks of 32 along the input, int8 activations per run. */
    public static final String INT4_DYNAMIC = "int4-dynamic";
    /** Weight-only int8 per output channel, float compute (Core ML, iOS 17). */
    public static final String INT8_WEIGHT = "int8-weight";
    /** Weight-only int4 in blocks of 32, float compute (Core ML, iOS 18). */
    public static final String INT4_WEIGHT = "int4-weight";
    public static final List<String> QUANTIZATIONS = List.of(INT8_DYNAMIC, INT4_DYNAMIC, INT8_WEIGHT, INT4_WEIGHT);

    // pipelines
    public static final String VISION = "vision";
    public static final String PREFILL = "prefill";
    public static final String DECODE = "decode";
    public static final String CAPTION = "caption";
    public static final String DENOISER = "denoiser";
    public static final String TEXT = "text_encoder";
    // video decoder
    public static final String TEMPORAL = "temporal";
    public static final String SPATIAL = "spatial";
    /** The one pipeline of a manifest that names none (all chunks in order). */
    public static final String DEFAULT_PIPELINE = "main";

    // file roles
    /** The chunk's program (first function of a multi-function ONNX chunk). */
    public static final String PROGRAM = "program";
    /** ONNX weights beside the graph(s). */
    public static final String EXTERNAL_DATA = "external_data";
    /** Token-embedding table [V, D], .npy (float32, float16 or int8: {@code llm.embedding_dtype}). */
    public static final String EMBEDDING = "embedding";
    /** [V] float32 of an int8 table, .npy: row i is embedding[i] * scales[i]. */
    public static final String EMBEDDING_SCALES = "embedding_scales";
    /** tokenizer.json (Hugging Face tokenizers). */
    public static final String TOKENIZER = "tokenizer";
    public static final String TOKENIZER_CONFIG = "tokenizer_config";
    public static final String SPECIAL_TOKENS_MAP = "special_tokens_map";
    /** [L, C_cap] caption embedding for classifier-free guidance, .npy. */
    public static final String NULL_CAPTION = "null_caption";
    /** File name -> role of the tokenizer files. */
    public static final Map<String, String> TOKENIZER_FILES = ordered(
            "tokenizer.json", TOKENIZER, "tokenizer_config.json", TOKENIZER_CONFIG,
            "special_tokens_map.json", SPECIAL_TOKENS_MAP);
    /** Role -> file name of the top-level data files. */
    public static final Map<String, String> DATA_FILES = ordered(EMBEDDING, "embed_tokens.npy",
            EMBEDDING_SCALES, "embed_scales.npy", NULL_CAPTION, "null_caption.npy");
    /** {@code llm.embedding_dtype}: the table as stored; int8 symmetric per row (max|row| / 127, 1 for a zero row). */
    public static final String EMBEDDING_FLOAT32 = "float32";
    public static final String EMBEDDING_FLOAT16 = "float16";
    public static final String EMBEDDING_INT8 = "int8";
    /**
     * Quantized ONNX, the LM head tied to the table: {@code q + EMBEDDING_ZERO_POINT} uint8 [V, D], scales [V, D / block]
     * float32; the {@code llm.embedding_tied} chunk's MatMulNBits reads the same files as its weight.
     */
    public static final String EMBEDDING_INT8_BLOCK = "int8_block";
    public static final int EMBEDDING_ZERO_POINT = 128;

    // functions
    /** Depth-chunk functions of a video denoiser. */
    public static final String PLAIN = "plain";
    public static final String TDTM = "tdtm";
    /** The method of a single-function ExecuTorch program / Core ML model. */
    public static final String DEFAULT_METHOD = "forward";

    // tensors. vision (HiRED): [1, P, 3, S, S] -> [1, K, D], [1, K] flat p*N + row*n + col ascending, [1, P] summing to K
    public static final String PIXEL_VALUES = "pixel_values";
    public static final String TOKENS = "tokens";
    public static final String POSITIONS = "positions";
    public static final String PARTITION_BUDGETS = "partition_budgets";
    /** [B*P, N] between vision chunks. */
    public static final String EARLY_SCORES = "early_scores";
    public static final String SELECT_SCORES = "select_scores";
    // language model: inputs_embeds [1, P or 1, D], last_index int [1], position int [1] -> logits [1, V]
    public static final String INPUTS_EMBEDS = "inputs_embeds";
    public static final String LAST_INDEX = "last_index";
    public static final String POSITION = "position";
    public static final String LOGITS = "logits";
    // llm.kv_cache: a Core ML language model's KV cache as model state (iOS 18) or inputs / outputs (past / present)
    public static final String KV_STATE = "state";
    public static final String KV_IO = "io";
    public static final List<String> KV = List.of("key", "value");
    // video denoiser: latent [B, C, T, H, W], timestep [B], caption [B, L, C], caption_mask [B, L] -> velocity
    public static final String LATENT = "latent";
    public static final String TIMESTEP = "timestep";
    public static final String CAPTION_EMBEDS = "caption_embeds";
    public static final String CAPTION_MASK = "caption_mask";
    public static final String VELOCITY = "velocity";
    /** Between video chunks. */
    public static final String CAPTION_TOKENS = "caption";
    public static final String TIME = "t";
    public static final String TIME_MLP = "t_mlp";
    // text encoder: input_ids int [1, L], attention_mask float [1, L] -> caption_embeds [1, L, D]
    public static final String INPUT_IDS = "input_ids";
    public static final String ATTENTION_MASK = "attention_mask";
    public static final String ATTENTION_BIAS = "attn_bias";
    // video decoder, frames in (B T) order: latent_chunk [B*k, C, h, w] (k latent frames of a micro-frame chunk)
    // -> frame_latents [B*f, C, h, w] (f video frames); frame_batch [N, C, h, w] -> frames [N, 3, 8h, 8w]
    // (about [-1, 1])
    public static final String LATENT_CHUNK = "latent_chunk";
    public static final String FRAME_LATENTS = "frame_latents";
    public static final String FRAME_BATCH = "frame_batch";
    public static final String FRAMES = "frames";

    // prompts
    /** Where a vlm's K visual tokens go in the prompt template. */
    public static final String IMAGE_TOKEN = "<image>";
    /** Where the user's text goes. */
    public static final String PROMPT_FIELD = "{prompt}";

    /** Role of the file holding one function of an ONNX chunk (one graph per file). */
    public static String programRole(String function, boolean first) {
        return first ? PROGRAM : PROGRAM + "_" + function;
    }

    /**
     * Function of a language-model chunk that prefills {@code length} positions (one per prefill length; beside it the
     * chunk holds {@code decode}, over the same weights): {@code prefill_96}.
     */
    public static String prefillFunction(int length) {
        return PREFILL + "_" + length;
    }

    /**
     * Function of a video-decoder temporal chunk that decodes a micro-frame chunk of {@code latentFrames} latent frames
     * (one per chunk length: the full one and a shorter last one, over the same weights): {@code latents_2}.
     */
    public static String temporalFunction(int latentFrames) {
        return "latents_" + latentFrames;
    }

    /** ExecuTorch method / Core ML function holding {@code function} of a multi-function chunk. */
    public static String methodName(String function) {
        return DEFAULT_METHOD + "_" + function;
    }

    /** The hidden state entering layer / block / depth step {@code index} (between chunks): {@code hidden_03}. */
    public static String hiddenName(int index) {
        return "hidden_" + twoDigits(index);
    }

    /** Video decoder: the frames entering temporal stage {@code index + 1} (0: the temporal head's output). */
    public static String temporalName(int index) {
        return TEMPORAL + "_" + twoDigits(index);
    }

    /** Video decoder: the frames entering spatial up block {@code index} (0: the spatial head's output). */
    public static String spatialName(int index) {
        return SPATIAL + "_" + twoDigits(index);
    }

    /** Decode inputs: the KV cache of {@code layer}, [1, KV, L, hd] each. */
    public static List<String> pastNames(int layer) {
        return List.of("past_key_" + twoDigits(layer), "past_value_" + twoDigits(layer));
    }

    /** Prefill / decode outputs: the updated KV cache of {@code layer}. */
    public static List<String> presentNames(int layer) {
        return List.of("present_key_" + twoDigits(layer), "present_value_" + twoDigits(layer));
    }

    /**
     * Core ML states of a stateful language-model chunk: the KV cache of {@code layer}, [1, KV, L, hd] each, written by
     * prefill and updated in place by decode (no past / present tensors cross the call).
     */
    public static List<String> cacheNames(int layer) {
        return List.of("key_cache_" + twoDigits(layer), "value_cache_" + twoDigits(layer));
    }

    /** Python's {@code f"{n:02d}"}: at least two digits, zero-padded after the sign. */
    private static String twoDigits(int n) {
        return String.format(java.util.Locale.ROOT, "%02d", n);
    }

    private static Map<String, String> ordered(String... pairs) {
        Map<String, String> map = new LinkedHashMap<>();
        for (int i = 0; i < pairs.length; i += 2) map.put(pairs[i], pairs[i + 1]);
        return Collections.unmodifiableMap(map);
    }
}
