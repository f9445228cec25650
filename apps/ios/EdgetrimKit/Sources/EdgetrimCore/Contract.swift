/// The contract between exporter, runtime and apps: every name an artifact uses, defined once.
///
/// Mirrors `edgetrim.runtime.contract` one for one (same values; `apps/conformance/contract.json` pins
/// them). Artifact kinds and their pipelines (chunk names in run order):
///
/// - `vision-encoder`: `vision` (pixel_values -> tokens, positions, partition_budgets)
/// - `vlm`: `vision`, `prefill`, `decode`; top-level files `embedding`, `tokenizer`
///   (`embedding_scales` when the table is int8)
/// - `language-model`: `prefill`, `decode`; top-level file `embedding` (`tokenizer` when known,
///   `embedding_scales` when the table is int8)
/// - `video-denoiser`: `caption`, `denoiser` (depth chunks hold functions `plain` and `tdtm`);
///   top-level file `null_caption`
/// - `text-encoder`: `text_encoder`; top-level file `tokenizer`
/// - `video-decoder`: `temporal` (per micro-frame chunk of latent frames; its chunks hold a function `latents_<k>` per
///   chunk length, e.g. `latents_5` and a shorter last `latents_2`, over the same weights), `spatial` (per
///   micro-batch of frames)
public enum Contract {
    public static let schemaVersion = 1
    public static let manifest = "manifest.json"
    public static let report = "report.json"

    // MARK: kinds, targets

    public static let visionEncoder = "vision-encoder"
    public static let vlm = "vlm"
    public static let languageModel = "language-model"
    public static let videoDenoiser = "video-denoiser"
    public static let textEncoder = "text-encoder"
    public static let videoDecoder = "video-decoder"
    public static let kinds = [visionEncoder, vlm, languageModel, videoDenoiser, textEncoder, videoDecoder]
    public static let onnx = "onnx"
    public static let coreml = "coreml"
    public static let executorch = "executorch"
    public static let targets = [onnx, coreml, executorch]
    public static let programSuffix = [onnx: ".onnx", executorch: ".pte", coreml: ".mlpackage"]
    /// `chunk.optimized`: saved after ONNX Runtime's extended optimizations.
    public static let ortExtended = "ort-extended"
    // `chunk.quantization`: how a chunk's weights are stored (absent: float); "dynamic": int8 activations per run too
    /// int8 weights per output channel, int8 activations per run.
    public static let int8Dynamic = "int8-dynamic"
    /// int4 weights in blocks of 32 along the input, int8 activations per run.
    public static let int4Dynamic = "int4-dynamic"
    /// Weight-only int8 per output channel, float compute (Core ML, iOS 17).
    public static let int8Weight = "int8-weight"
    /// Weight-only int4 in blocks of 32, float compute (Core ML, iOS 18).
    public static let int4Weight = "int4-weight"
    public static let quantizations = [int8Dynamic, int4Dynamic, int8Weight, int4Weight]

    // MARK: pipelines

    public static let vision = "vision"
    public static let prefill = "prefill"
    public static let decode = "decode"
    public static let caption = "caption"
    public static let denoiser = "denoiser"
    public static let text = "text_encoder"
    // video decoder
    public static let temporal = "temporal"
    public static let spatial = "spatial"
    /// The one pipeline of a manifest that names none (all chunks in order).
    public static let defaultPipeline = "main"

    // MARK: file roles

    /// The chunk's program (first function of a multi-function ONNX chunk).
    public static let program = "program"
    /// ONNX weights beside the graph(s).
    public static let externalData = "external_data"
    /// Token-embedding table [V, D], .npy (float32, float16 or int8: `llm.embedding_dtype`).
    public static let embedding = "embedding"
    /// [V] float32 of an int8 table, .npy: row i is embedding[i] * scales[i].
    public static let embeddingScales = "embedding_scales"
    /// tokenizer.json (Hugging Face tokenizers).
    public static let tokenizer = "tokenizer"
    public static let tokenizerConfig = "tokenizer_config"
    public static let specialTokensMap = "special_tokens_map"
    /// [L, C_cap] caption embedding for classifier-free guidance, .npy.
    public static let nullCaption = "null_caption"
    public static let tokenizerFiles = [
        "tokenizer.json": tokenizer, "tokenizer_config.json": tokenizerConfig,
        "special_tokens_map.json": specialTokensMap,
    ]
    public static let dataFiles = [
        embedding: "embed_tokens.npy", embeddingScales: "embed_scales.npy", nullCaption: "null_caption.npy",
    ]
    /// `llm.embedding_dtype`: the table as stored; int8 is symmetric per row (scale max|row| / 127, 1 for a zero row).
    public static let embeddingFloat32 = "float32"
    public static let embeddingFloat16 = "float16"
    public static let embeddingInt8 = "int8"
    /// Quantized ONNX, the LM head tied to the table: `q + embeddingZeroPoint` uint8 [V, D], scales [V, D / block]
    /// float32; the `llm.embedding_tied` chunk's MatMulNBits reads the same files as its weight.
    public static let embeddingInt8Block = "int8_block"
    public static let embeddingZeroPoint = 128

    /// Role of the file holding one function of an ONNX chunk (one graph per file).
    public static func programRole(_ function: String, first: Bool) -> String {
        first ? program : "\(program)_\(function)"
    }

    // MARK: functions

    /// Depth-chunk functions of a video denoiser.
    public static let plain = "plain"
    public static let tdtm = "tdtm"
    /// The method of a single-function ExecuTorch program / Core ML model.
    public static let defaultMethod = "forward"

    /// Function of a language-model chunk that prefills `length` positions (one per prefill length; beside it the
    /// chunk holds `decode`, over the same weights): `prefill_96`.
    public static func prefillFunction(_ length: Int) -> String { "\(prefill)_\(length)" }

    /// Function of a video-decoder temporal chunk that decodes a micro-frame chunk of `latentFrames` latent frames
    /// (one per chunk length: the full one and a shorter last one, over the same weights): `latents_2`.
    public static func temporalFunction(_ latentFrames: Int) -> String { "latents_\(latentFrames)" }

    /// ExecuTorch method / Core ML function holding `function` of a multi-function chunk.
    public static func methodName(_ function: String) -> String { "\(defaultMethod)_\(function)" }

    // MARK: tensors

    // vision (HiRED): [1, P, 3, S, S] -> [1, K, D], [1, K] flat p*N + row*n + col ascending, [1, P] summing to K
    public static let pixelValues = "pixel_values"
    public static let tokens = "tokens"
    public static let positions = "positions"
    public static let partitionBudgets = "partition_budgets"
    /// [B*P, N] between vision chunks.
    public static let earlyScores = "early_scores"
    public static let selectScores = "select_scores"
    // language model: inputs_embeds [1, P or 1, D], last_index int [1], position int [1] -> logits [1, V]
    public static let inputsEmbeds = "inputs_embeds"
    public static let lastIndex = "last_index"
    public static let position = "position"
    public static let logits = "logits"
    // `llm.kv_cache`: a Core ML language model's KV cache as model state (iOS 18) or inputs / outputs (past / present)
    public static let kvState = "state"
    public static let kvIO = "io"
    public static let kv = ["key", "value"]
    // video denoiser: latent [B, C, T, H, W], timestep [B], caption [B, L, C], caption_mask [B, L] -> velocity
    public static let latent = "latent"
    public static let timestep = "timestep"
    public static let captionEmbeds = "caption_embeds"
    public static let captionMask = "caption_mask"
    public static let velocity = "velocity"
    /// Between video chunks.
    public static let captionTokens = "caption"
    public static let time = "t"
    public static let timeMLP = "t_mlp"
    // text encoder: input_ids int [1, L], attention_mask float [1, L] -> caption_embeds [1, L, D]
    public static let inputIDs = "input_ids"
    public static let attentionMask = "attention_mask"
    public static let attentionBias = "attn_bias"
    // video decoder, frames in (B T) order: latent_chunk [B*k, C, h, w] (k latent frames of a micro-frame chunk)
    // -> frame_latents [B*f, C, h, w] (f video frames); frame_batch [N, C, h, w] -> frames [N, 3, 8h, 8w]
    // (about [-1, 1])
    public static let latentChunk = "latent_chunk"
    public static let frameLatents = "frame_latents"
    public static let frameBatch = "frame_batch"
    public static let frames = "frames"

    /// The hidden state entering layer / block / depth step `index` (between chunks): `hidden_03`.
    public static func hiddenName(_ index: Int) -> String { "hidden_\(twoDigits(index))" }

    /// Video decoder: the frames entering temporal stage `index + 1` (0: the temporal head's output): `temporal_03`.
    public static func temporalName(_ index: Int) -> String { "\(temporal)_\(twoDigits(index))" }

    /// Video decoder: the frames entering spatial up block `index` (0: the spatial head's output): `spatial_03`.
    public static func spatialName(_ index: Int) -> String { "\(spatial)_\(twoDigits(index))" }

    /// Decode inputs: the KV cache of `layer`, [1, KV, L, hd] each.
    public static func pastNames(_ layer: Int) -> [String] { kv.map { "past_\($0)_\(twoDigits(layer))" } }

    /// Prefill / decode outputs: the updated KV cache of `layer`.
    public static func presentNames(_ layer: Int) -> [String] { kv.map { "present_\($0)_\(twoDigits(layer))" } }

    /// Core ML states of a stateful language-model chunk: the KV cache of `layer`, [1, KV, L, hd] each, written by
    /// prefill and updated in place by decode (no past / present tensors cross the call).
    public static func cacheNames(_ layer: Int) -> [String] { kv.map { "\($0)_cache_\(twoDigits(layer))" } }

    // MARK: prompts

    /// Where a vlm's K visual tokens go in the prompt template.
    public static let imageToken = "<image>"
    /// Where the user's text goes.
    public static let promptField = "{prompt}"

    /// Python's `f"{n:02d}"`: at least two digits, zero-padded after the sign.
    private static func twoDigits(_ n: Int) -> String {
        let digits = String(n.magnitude)
        return (n < 0 ? "-" : "") + String(repeating: "0", count: max(0, 2 - digits.count - (n < 0 ? 1 : 0))) + digits
    }
}
