import Foundation

/// `manifest.json` of an artifact, every kind (`Contract.kinds`). Unknown keys are ignored.
///
/// `chunks` lists every program (unique names); `pipelines` names the ordered chunk lists the runtime runs
/// (absent: one pipeline, `main`, all chunks in order); `files` lists data of no chunk (embedding table,
/// tokenizer, null caption). The kind sections (`reduction`, `llm`, `video`, ...) are present for the kinds
/// that use them; their non-optional fields are those the runtime reads. Read one with `Artifact.read(at:)`
/// or `Manifest.parse(_:)`, which check it as the Python runtime does; objects keep the file's key order.
public struct Manifest: Codable, Sendable {
    public var schemaVersion: Int
    public var edgetrimVersion: String?
    /// Export time, ISO 8601 UTC.
    public var created: String?
    /// One of `Contract.kinds` (`vision-encoder` when the manifest names none).
    public var kind: String
    /// One of `Contract.targets`.
    public var target: String
    /// fp16 or fp32.
    public var precision: String?
    public var source: Source
    public var chunks: [Chunk]
    public var pipelines: OrderedMap<[String]>?
    public var files: [FileEntry]
    public var reduction: Reduction?
    public var preprocessing: Preprocessing?
    /// Output name -> its meaning in words.
    public var outputs: OrderedMap<String>?
    public var llm: LLM?
    public var video: Video?
    public var textEncoder: TextEncoder?
    public var exportOptions: ExportOptions?

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case edgetrimVersion = "edgetrim_version"
        case created, kind, target
        case precision, source, chunks, pipelines, files, reduction, preprocessing, outputs, llm, video
        case textEncoder = "text_encoder"
        case exportOptions = "export_options"
    }

    /// Where the model came from (for a vlm, the vision tower's origin).
    public struct Source: Codable, Sendable {
        /// preset, folder or hub.
        public var kind: String?
        /// Preset name, folder path or hub id.
        public var name: String
        public var architecture: String?
        /// True for presets: outputs have the right shapes but no meaning.
        public var randomWeights: Bool
        public var hasProjector: Bool?
        /// D, the last dimension of `tokens`.
        public var tokenDim: Int?

        enum CodingKeys: String, CodingKey {
            case kind, name, architecture
            case randomWeights = "random_weights"
            case hasProjector = "has_projector"
            case tokenDim = "token_dim"
        }
    }

    /// One program: the files it needs and the tensors it takes and returns (passed between chunks by name).
    public struct Chunk: Codable, Sendable {
        public var name: String
        public var files: [FileEntry]
        public var inputs: [TensorSpec]
        public var outputs: [TensorSpec]
        /// Functions sharing the chunk's weights (e.g. plain / tdtm); absent: one program, role `program`.
        public var functions: OrderedMap<Function>?
        /// `Contract.ortExtended` when ONNX Runtime's optimizations were saved at export.
        public var optimized: String?
        /// One of `Contract.quantizations` (nil: float weights).
        public var quantization: String?
        /// Core ML model state every function reads and writes in place (a stateful language model's KV cache,
        /// `Contract.cacheNames`); nil: stateless. A generation keeps one state per chunk (`ChunkStates`).
        public var states: [TensorSpec]?

        /// Bytes of all its files: what the memory planner budgets.
        public var bytes: Int { files.reduce(0) { $0 + $1.bytes } }
    }

    /// A file (or a folder such as an .mlpackage) relative to the artifact folder.
    public struct FileEntry: Codable, Sendable, Equatable {
        /// POSIX path, never absolute, never `..`.
        public var path: String
        /// `program`, `external_data`, `program_<function>`, or a data role (`embedding`, `tokenizer`, ...).
        public var role: String
        /// Size; for a folder, the sum of its files' sizes.
        public var bytes: Int
        /// Lowercase hex; for a folder, by the folder rule (see `Verification.swift`).
        public var sha256: String
    }

    /// A program input or output: static shape, dtype float32 / float16 / int32 / int64.
    public struct TensorSpec: Codable, Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var dtype: String
    }

    /// One function of a multi-function chunk: its program file (listed in the chunk's files), the ExecuTorch
    /// method / Core ML function inside it (default `forward`), and its own inputs / outputs when they differ
    /// from the chunk's (a language model's `prefill_<n>` / `decode`; see `Artifact.io`).
    public struct Function: Codable, Sendable, Equatable {
        public var file: String
        public var method: String?
        public var inputs: [TensorSpec]?
        public var outputs: [TensorSpec]?
    }

    /// The token reduction baked into a vision graph: K (`tokens`) of the `available_tokens` P * N.
    public struct Reduction: Codable, Sendable {
        /// hired or none.
        public var method: String
        public var requestedBudget: String
        public var tokens: Int
        public var availableTokens: Int
        public var keptFraction: Double

        enum CodingKeys: String, CodingKey {
            case method
            case requestedBudget = "requested_budget"
            case tokens
            case availableTokens = "available_tokens"
            case keptFraction = "kept_fraction"
        }
    }

    /// How an image becomes `pixel_values` [1, P, 3, S, S] (AnyRes views, normalized RGB).
    public struct Preprocessing: Codable, Sendable {
        /// S, the side of every view.
        public var imageSize: Int
        public var patchSize: Int?
        /// n = S / patch_size.
        public var patchesPerSide: Int
        /// AnyRes [rows, cols]; [1, 1] is the full view only.
        public var grid: [Int]
        /// P: 1 for a 1x1 grid, else 1 + rows * cols.
        public var partitions: Int?
        public var mean: [Double]
        public var std: [Double]

        enum CodingKeys: String, CodingKey {
            case imageSize = "image_size"
            case patchSize = "patch_size"
            case patchesPerSide = "patches_per_side"
            case grid
            case partitions, mean, std
        }
    }

    /// The language model of a vlm / language-model artifact: static lengths, KV layers, prompt (vlm).
    public struct LLM: Codable, Sendable {
        public var hiddenSize: Int?
        public var numLayers: Int
        public var numHeads: Int?
        public var numKVHeads: Int?
        public var headDim: Int?
        public var vocabSize: Int?
        /// KV-cache slots: prompt + generated tokens must fit.
        public var maxLength: Int
        /// P, the longest static prefill length.
        public var prefillLength: Int
        /// Every exported prefill length, ascending, the last P (one `Contract.prefillFunction` each); absent in
        /// older artifacts: [P].
        public var prefillLengths: [Int]
        /// float32, float16 or int8 (with `embedding_scales`): the embedding table on disk (`EmbeddingTable`).
        public var embeddingDtype: String?
        /// int8_block tables only: the head chunk whose graphs read the table files as their weight.
        public var embeddingTied: String?
        /// Where the KV cache lives (`Contract.kvState`: the layer chunks' model state; `Contract.kvIO`: past / present
        /// tensors); absent in older artifacts: io.
        public var kvCache: String
        /// vlm: K visual tokens spliced in at the image token.
        public var visualTokens: Int?
        /// vlm: holds `Contract.imageToken` and `Contract.promptField`.
        public var template: String?
        public var imageTokenID: Int?
        public var eosTokenIDs: [Int]?

        enum CodingKeys: String, CodingKey {
            case hiddenSize = "hidden_size"
            case numLayers = "num_layers"
            case numHeads = "num_heads"
            case numKVHeads = "num_kv_heads"
            case headDim = "head_dim"
            case vocabSize = "vocab_size"
            case maxLength = "max_length"
            case prefillLength = "prefill_length"
            case prefillLengths = "prefill_lengths"
            case embeddingDtype = "embedding_dtype"
            case embeddingTied = "embedding_tied"
            case kvCache = "kv_cache"
            case visualTokens = "visual_tokens"
            case template
            case imageTokenID = "image_token_id"
            case eosTokenIDs = "eos_token_ids"
        }
    }

    /// STDiT3 denoiser geometry and sampler defaults (video-denoiser).
    public struct Video: Codable, Sendable {
        /// [B, C_in, T, H, W] of the denoiser input.
        public var latentShape: [Int]
        /// 2: CFG's two halves in one call; 1: two calls per step.
        public var batch: Int
        public var inChannels: Int
        /// The first `in_channels` of velocity are v (the rest: learned sigma).
        public var outChannels: Int?
        public var frames: Int?
        public var tokensPerFrame: Int?
        /// [height, width] in pixels: the timestep shift.
        public var pixelSize: [Int]
        public var pixelFrames: Int
        public var captionLength: Int
        public var captionChannels: Int
        public var depth: Int?
        /// Functions of every depth chunk (plain, tdtm).
        public var variants: [String]?
        /// Role of the top-level null caption file.
        public var nullCaption: String?
        /// FLOPs of one depth step per function.
        public var flops: OrderedMap<Int>?
        public var scheduler: Scheduler

        enum CodingKeys: String, CodingKey {
            case latentShape = "latent_shape"
            case batch
            case inChannels = "in_channels"
            case outChannels = "out_channels"
            case frames
            case tokensPerFrame = "tokens_per_frame"
            case pixelSize = "pixel_size"
            case pixelFrames = "pixel_frames"
            case captionLength = "caption_length"
            case captionChannels = "caption_channels"
            case depth, variants
            case nullCaption = "null_caption"
            case flops
            case scheduler
        }

        /// Rectified-flow defaults (Open-Sora 1.2).
        public struct Scheduler: Codable, Sendable {
            public var numSteps: Int?
            public var cfgScale: Double
            public var baseResolution: Int
            public var mergeSteps: Int?
            public var leapAt: Int?

            enum CodingKeys: String, CodingKey {
                case numSteps = "num_steps"
                case cfgScale = "cfg_scale"
                case baseResolution = "base_resolution"
                case mergeSteps = "merge_steps"
                case leapAt = "leap_at"
            }
        }
    }

    /// A chunked T5 caption encoder (text-encoder).
    public struct TextEncoder: Codable, Sendable {
        /// L, token ids per caption (padded, masked).
        public var maxLength: Int
        public var hiddenSize: Int?
        public var vocabSize: Int
        /// Role of the top-level tokenizer file.
        public var tokenizer: String

        enum CodingKeys: String, CodingKey {
            case maxLength = "max_length"
            case hiddenSize = "hidden_size"
            case vocabSize = "vocab_size"
            case tokenizer
        }
    }

    /// What the artifact was exported with (the rest of the options depend on the kind).
    public struct ExportOptions: Codable, Sendable {
        public var model: String
        public var target: String
        public var chunks: Int?
    }
}

extension Manifest.LLM {
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        numHeads = try c.decodeIfPresent(Int.self, forKey: .numHeads)
        numKVHeads = try c.decodeIfPresent(Int.self, forKey: .numKVHeads)
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize)
        maxLength = try c.decode(Int.self, forKey: .maxLength)
        prefillLength = try c.decode(Int.self, forKey: .prefillLength)
        prefillLengths = try c.decodeIfPresent([Int].self, forKey: .prefillLengths) ?? [prefillLength]
        embeddingDtype = try c.decodeIfPresent(String.self, forKey: .embeddingDtype)
        embeddingTied = try c.decodeIfPresent(String.self, forKey: .embeddingTied)
        kvCache = try c.decodeIfPresent(String.self, forKey: .kvCache) ?? Contract.kvIO
        visualTokens = try c.decodeIfPresent(Int.self, forKey: .visualTokens)
        template = try c.decodeIfPresent(String.self, forKey: .template)
        imageTokenID = try c.decodeIfPresent(Int.self, forKey: .imageTokenID)
        eosTokenIDs = try c.decodeIfPresent([Int].self, forKey: .eosTokenIDs)
    }
}

extension Manifest {
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schemaVersion = try c.decode(Int.self, forKey: .schemaVersion)
        edgetrimVersion = try c.decodeIfPresent(String.self, forKey: .edgetrimVersion)
        created = try c.decodeIfPresent(String.self, forKey: .created)
        kind = try c.decodeIfPresent(String.self, forKey: .kind) ?? Contract.visionEncoder
        target = try c.decode(String.self, forKey: .target)
        precision = try c.decodeIfPresent(String.self, forKey: .precision)
        source = try c.decode(Source.self, forKey: .source)
        chunks = try c.decode([Chunk].self, forKey: .chunks)
        pipelines = try c.decodeIfPresent(OrderedMap<[String]>.self, forKey: .pipelines)
        files = try c.decodeIfPresent([FileEntry].self, forKey: .files) ?? []
        reduction = try c.decodeIfPresent(Reduction.self, forKey: .reduction)
        preprocessing = try c.decodeIfPresent(Preprocessing.self, forKey: .preprocessing)
        outputs = try c.decodeIfPresent(OrderedMap<String>.self, forKey: .outputs)
        llm = try c.decodeIfPresent(LLM.self, forKey: .llm)
        video = try c.decodeIfPresent(Video.self, forKey: .video)
        textEncoder = try c.decodeIfPresent(TextEncoder.self, forKey: .textEncoder)
        exportOptions = try c.decodeIfPresent(ExportOptions.self, forKey: .exportOptions)
    }
}

/// An artifact folder and its manifest, with the lookups the runtime needs (Python's `Artifact`).
public struct Artifact: Sendable {
    public let root: URL
    public let manifest: Manifest

    /// No checks: use `Artifact.open(at:)` (verified) or `Artifact.read(at:)` (manifest only).
    public init(root: URL, manifest: Manifest) {
        self.root = root
        self.manifest = manifest
    }

    public var kind: String { manifest.kind }
    public var target: String { manifest.target }
    public var chunks: [Manifest.Chunk] { manifest.chunks }
    public var randomWeights: Bool { manifest.source.randomWeights }

    /// Pipeline name -> chunk names in run order (one pipeline, `main`, when the manifest names none).
    public var pipelines: OrderedMap<[String]> {
        if let pipelines = manifest.pipelines, !pipelines.isEmpty { return pipelines }
        return OrderedMap([(Contract.defaultPipeline, chunks.map(\.name))])
    }

    /// The chunks of pipeline `name` in run order (nil: the only pipeline, or `main`).
    public func pipeline(_ name: String? = nil) throws -> [Manifest.Chunk] {
        let pipelines = self.pipelines
        let name = name ?? (pipelines.count == 1 ? pipelines.keys[0] : Contract.defaultPipeline)
        guard let members = pipelines[name] else {
            throw ArtifactError(
                "the artifact has no pipeline '\(name)' (it has \(pipelines.keys.joined(separator: ", "))): re-export it"
            )
        }
        return try members.map { member in
            guard let chunk = chunks.first(where: { $0.name == member }) else {
                throw ArtifactError(
                    "pipeline '\(name)' names chunk '\(member)', which the artifact lacks: re-export it")
            }
            return chunk
        }
    }

    /// The first file of `chunk` with `role`.
    public func file(_ chunk: Manifest.Chunk, role: String) -> URL? {
        chunk.files.first { $0.role == role }.map { root.appendingPathComponent($0.path) }
    }

    /// A top-level data file (`files`) by role, e.g. `embedding` or `tokenizer`.
    public func dataFile(_ role: String) throws -> URL {
        guard let entry = manifest.files.first(where: { $0.role == role }) else {
            throw ArtifactError("the artifact lists no \(role) file: re-export it")
        }
        return root.appendingPathComponent(entry.path)
    }

    /// (inputs, outputs) of `function` of a chunk: the function entry's own when it lists them (a language model's
    /// `prefill_<n>` / `decode`), else the chunk's (nil: the chunk's, which are its first function's).
    public func io(_ chunk: Manifest.Chunk, function: String? = nil)
        -> (inputs: [Manifest.TensorSpec], outputs: [Manifest.TensorSpec])
    {
        let entry = function.flatMap { chunk.functions?[$0] }
        return (entry?.inputs ?? chunk.inputs, entry?.outputs ?? chunk.outputs)
    }

    /// (program file, method name) that runs `function` of a chunk.
    ///
    /// A chunk with `functions` maps each to its file and method (the ExecuTorch method or Core ML function;
    /// an ONNX file holds one graph); nil picks its first. A chunk without `functions` has one program,
    /// used whatever function the pipeline runs, with method `forward`.
    public func program(_ chunk: Manifest.Chunk, function: String? = nil) throws -> (url: URL, method: String) {
        guard let functions = chunk.functions, let first = functions.keys.first else {
            guard let url = file(chunk, role: Contract.program) else {
                throw ArtifactError("chunk '\(chunk.name)' lists no program file: re-export the artifact")
            }
            return (url, Contract.defaultMethod)
        }
        let function = function ?? first
        guard let entry = functions[function] else {
            throw ArtifactError(
                "chunk '\(chunk.name)' has no function '\(function)' (it has \(functions.keys.joined(separator: ", "))): "
                    + "re-export the artifact with that variant")
        }
        return (root.appendingPathComponent(entry.file), entry.method ?? Contract.defaultMethod)
    }
}

/// A problem with the artifact or with what the caller asks of it; the message names it and the fix.
public struct ArtifactError: Error, CustomStringConvertible, LocalizedError {
    public let description: String

    public init(_ description: String) { self.description = description }

    public var errorDescription: String? { description }
}

// MARK: - Ordered objects

/// A JSON object whose key order is kept, as Python's dicts keep it (a chunk's first function is its default).
///
/// Decoded by `Manifest.parse` / `Artifact.read`, keys come in the file's order; decoded by a plain
/// `JSONDecoder`, which does not tell the order, they come sorted.
public struct OrderedMap<Value: Sendable>: Sendable {
    /// Keys in order, each once.
    public private(set) var keys: [String]
    private var values: [String: Value]

    /// From pairs in order; a repeated key keeps its first place and its last value.
    public init(_ pairs: [(String, Value)]) {
        keys = []
        values = [:]
        for (key, value) in pairs {
            if values.updateValue(value, forKey: key) == nil { keys.append(key) }
        }
    }

    public subscript(key: String) -> Value? { values[key] }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    /// (key, value) pairs in order.
    public var pairs: [(key: String, value: Value)] { keys.compactMap { key in values[key].map { (key, $0) } } }
}

extension OrderedMap: Equatable where Value: Equatable {}

extension OrderedMap: Codable where Value: Codable {
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: OrderedKey.self)
        var decoded: [String: Value] = [:]
        for key in container.allKeys { decoded[key.stringValue] = try container.decode(Value.self, forKey: key) }
        let order = (decoder.userInfo[ManifestJSON.userInfoKey] as? ManifestJSON)?.keys(at: decoder.codingPath)
        let keys = order?.filter { decoded[$0] != nil } ?? decoded.keys.sorted()
        self.init(keys.compactMap { key in decoded[key].map { (key, $0) } })
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: OrderedKey.self)
        for (key, value) in pairs { try container.encode(value, forKey: OrderedKey(key)) }
    }
}

/// Any string as a coding key.
private struct OrderedKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.init(stringValue) }
    init?(intValue: Int) { nil }
}

extension Manifest {
    /// Bytes a chunk's programs read: its own files, and for the head tied to the embedding table
    /// (`llm.embeddingTied`) the table and its scales, which its graphs read as their weight (Python's
    /// `Artifact.weight_bytes`). What the memory planner budgets.
    public func weightBytes(_ chunk: Chunk) -> Int {
        guard let tied = llm?.embeddingTied, tied == chunk.name else { return chunk.bytes }
        let roles: Set<String> = [Contract.embedding, Contract.embeddingScales]
        return chunk.bytes + files.filter { roles.contains($0.role) }.reduce(0) { $0 + $1.bytes }
    }
}
