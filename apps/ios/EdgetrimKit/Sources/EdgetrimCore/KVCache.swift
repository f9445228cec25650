/// A generation's KV cache between language-model calls, in the artifact's form (`llm.kv_cache`): the `present_*`
/// outputs of a call fed back as the next decode's `past_*` inputs (`Contract.kvIO`), or the layer chunks' Core ML
/// model state (`Contract.kvState`, iOS 18), which no tensor carries.
public struct KVCache {
    /// `past_*` inputs of the next decode call (io; empty for state).
    public let past: [String: Tensor]
    /// The stateful chunks' model state, made by the prefill (state; holds none for io).
    public let states: ChunkStates
}

/// What a language model's prefill and decode pipelines take and give (their `ChunkScheduler` inputs / outputs) in
/// its KV-cache form: `past_*` in and `present_*` out for every layer (io), neither (state).
public struct LanguageModelIO: Sendable {
    /// `Contract.kvState` or `Contract.kvIO` (`llm.kv_cache`).
    public let kvCache: String
    public let layers: Int

    public init(_ llm: Manifest.LLM) {
        kvCache = llm.kvCache
        layers = llm.numLayers
    }

    public var prefillInputs: [String] { [Contract.inputsEmbeds, Contract.lastIndex] }
    public var decodeInputs: [String] { [Contract.inputsEmbeds, Contract.position] + past }
    /// Both pipelines' outputs.
    public var outputs: [String] { [Contract.logits] + present }

    private var stateful: Bool { kvCache == Contract.kvState }
    private var past: [String] { stateful ? [] : (0..<layers).flatMap(Contract.pastNames) }
    private var present: [String] { stateful ? [] : (0..<layers).flatMap(Contract.presentNames) }

    /// A call's logits and the cache for the next decode step (its `present_*` as `past_*`; the same states).
    func next(_ outputs: [String: Tensor], states: ChunkStates) throws -> (logits: Tensor, caches: KVCache) {
        let missing = ([Contract.logits] + present).filter { outputs[$0] == nil }
        guard missing.isEmpty, let logits = outputs[Contract.logits] else {
            throw ArtifactError(
                "the chunks returned no \(missing.joined(separator: ", ")): the artifact does not match this runtime")
        }
        let past = Dictionary(uniqueKeysWithValues: zip(self.past, present.compactMap { outputs[$0] }))
        return (logits, KVCache(past: past, states: states))
    }
}

extension GreedyDecoder where Caches == KVCache {
    /// One run of a pipeline: feeds, the function its chunks run, the generation's chunk states -> outputs
    /// (`ChunkScheduler.run(_:function:states:)`).
    public typealias PipelineRun =
        (_ feeds: [String: Tensor], _ function: String, _ states: ChunkStates) throws -> [String: Tensor]

    /// Greedy decoding over the `prefill` and `decode` pipelines of a language model (schedulers opened with
    /// `LanguageModelIO`'s names), whichever its KV-cache form: each generation's prefill starts a fresh cache (new
    /// `ChunkStates`, dropped with the generation) that its decode steps carry. `integer` makes `last_index` and
    /// `position` ([1]: int32 for Core ML, int64 otherwise).
    public init(
        llm: Manifest.LLM, integer: @escaping (Int) -> Tensor, embedding: @escaping (Int) throws -> [Float],
        prefill: @escaping PipelineRun, decode: @escaping PipelineRun
    ) {
        let io = LanguageModelIO(llm)
        self.init(
            prefillLengths: llm.prefillLengths, maxLength: llm.maxLength, embedding: embedding,
            prefill: { embeds, last, length in
                let states = ChunkStates()
                let feeds = [Contract.inputsEmbeds: embeds, Contract.lastIndex: integer(last)]
                return try io.next(try prefill(feeds, Contract.prefillFunction(length), states), states: states)
            },
            decode: { row, position, cache in
                let step = [Contract.inputsEmbeds: row, Contract.position: integer(position)]
                let feeds = cache.past.merging(step) { $1 }
                return try io.next(try decode(feeds, Contract.decode, cache.states), states: cache.states)
            })
    }
}
