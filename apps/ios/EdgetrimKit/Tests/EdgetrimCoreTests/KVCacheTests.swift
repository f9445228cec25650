import XCTest

@testable import EdgetrimCore

/// A stateful language model in miniature, for the language-model-coreml vector. The layer chunk's state is its KV
/// cache, one value per position (the first feature of the embedding written there): prefill writes rows 0..<P into
/// a fresh cache, decode writes row `position` into one a prefill wrote; the hidden state at p is the sum of rows
/// 0...p. lm_head (stateless) gives logits whose argmax is the hidden state at `last_index` (decode: its one row)
/// modulo V. Records every call.
final class FakeStatefulBackend: ChunkBackend, @unchecked Sendable {
    /// One chunk's KV cache: position -> value.
    final class Cache {
        var rows: [Int: Float] = [:]
    }

    struct Call {
        let chunk: String
        let function: String?
        /// Names of the tensors in and out.
        let tensors: Set<String>
        let state: Cache?
    }

    struct Refusal: Error, CustomStringConvertible {
        let description: String
    }

    private let lock = NSLock()
    private var recorded: [Call] = []
    private var states: [Cache] = []

    var calls: [Call] { lock.withLock { recorded } }
    /// Every state made, in order.
    var made: [Cache] { lock.withLock { states } }

    func load(_ program: ChunkProgram) throws -> ChunkProgram { program }

    func unload(_ handle: ChunkProgram) {}

    func makeState(_ handle: ChunkProgram) throws -> AnyObject {
        let cache = Cache()
        lock.withLock { states.append(cache) }
        return cache
    }

    func run(_ handle: ChunkProgram, inputs: [String: Tensor]) throws -> [String: Tensor] {
        let hidden = try XCTUnwrap(inputs[handle.inputs[0].name])
        let row = inputs[Contract.lastIndex]?.ints[0] ?? 0
        let logits = try XCTUnwrap(handle.outputs.first)
        var values = [Float](repeating: 0, count: logits.shape[1])
        values[Int(hidden.floats[row * hidden.shape[2]]) % values.count] = 1
        return record(handle, inputs, [logits.name: Tensor(shape: logits.shape, floats: values)], state: nil)
    }

    func run(_ handle: ChunkProgram, inputs: [String: Tensor], state: AnyObject) throws -> [String: Tensor] {
        let cache = try XCTUnwrap(state as? Cache)
        let embeds = try XCTUnwrap(inputs[Contract.inputsEmbeds])
        let (length, width) = (embeds.shape[1], embeds.shape[2])
        let start: Int
        if let position = inputs[Contract.position]?.ints[0] {
            guard !cache.rows.isEmpty else { throw Refusal(description: "decode into a cache no prefill wrote") }
            start = position
        } else {
            guard cache.rows.isEmpty else { throw Refusal(description: "prefill into a used cache") }
            start = 0
        }
        for i in 0..<length { cache.rows[start + i] = embeds.floats[i * width] }
        let sums = (0..<length).map { i in (0...(start + i)).reduce(Float(0)) { $0 + (cache.rows[$1] ?? .nan) } }
        let output = handle.outputs[0]
        let hidden = Tensor(shape: output.shape, floats: sums.flatMap { [Float](repeating: $0, count: width) })
        return record(handle, inputs, [output.name: hidden], state: cache)
    }

    private func record(
        _ handle: ChunkProgram, _ inputs: [String: Tensor], _ outputs: [String: Tensor], state: Cache?
    ) -> [String: Tensor] {
        let call = Call(
            chunk: handle.chunk.name, function: handle.function, tensors: Set(inputs.keys).union(outputs.keys),
            state: state)
        lock.withLock { recorded.append(call) }
        return outputs
    }
}

/// GreedyDecoder over a language model's prefill and decode schedulers, in both KV-cache forms.
final class KVCacheTests: XCTestCase {
    func artifact(_ name: String) throws -> Artifact {
        Artifact(
            root: URL(fileURLWithPath: "/artifact"),
            manifest: try Manifest.parse(Vectors.data("manifests/\(name).json")))
    }

    /// (prefill, decode) schedulers of `artifact` on `backend`, with `LanguageModelIO`'s names.
    func schedulers<Backend: ChunkBackend>(_ artifact: Artifact, _ backend: Backend, budgetMB: Double? = nil) throws
        -> (ChunkScheduler<Backend>, ChunkScheduler<Backend>)
    {
        let llm = try XCTUnwrap(artifact.manifest.llm)
        let io = LanguageModelIO(llm)
        return (
            try ChunkScheduler(
                artifact: artifact, backend: backend, pipeline: Contract.prefill, memoryBudgetMB: budgetMB,
                inputs: io.prefillInputs, outputs: io.outputs, function: Contract.prefillFunction(llm.prefillLength)),
            try ChunkScheduler(
                artifact: artifact, backend: backend, pipeline: Contract.decode, memoryBudgetMB: budgetMB,
                inputs: io.decodeInputs, outputs: io.outputs, function: Contract.decode)
        )
    }

    func decoder<Backend: ChunkBackend>(
        _ llm: Manifest.LLM, _ pipelines: (ChunkScheduler<Backend>, ChunkScheduler<Backend>)
    ) -> GreedyDecoder<KVCache> {
        let width = llm.hiddenSize ?? 0
        return GreedyDecoder(
            llm: llm, integer: { Tensor(shape: [1], values: .int32([Int32($0)])) },
            embedding: { [Float($0)] + [Float](repeating: 0, count: width - 1) },
            prefill: { try pipelines.0.run($0, function: $1, states: $2) },
            decode: { try pipelines.1.run($0, function: $1, states: $2) })
    }

    /// A prompt [n, D] whose rows start with `values`.
    func prompt(_ values: [Float], width: Int) -> Tensor {
        Tensor(shape: [values.count, width], floats: values.flatMap { [$0] + [Float](repeating: 0, count: width - 1) })
    }

    /// The stateful vector: prefill writes the layer chunk's state, each decode step updates that same state, no
    /// tensor but the hidden state crosses a call, and every generation starts from a fresh state, whether the
    /// chunks stay loaded or are loaded for every call.
    func testAStatefulModelCarriesItsStateAcrossCallsAndAFreshOneEachGeneration() throws {
        let artifact = try artifact("language-model-coreml")
        let llm = try XCTUnwrap(artifact.manifest.llm)
        let io = LanguageModelIO(llm)
        XCTAssertEqual(io.decodeInputs, [Contract.inputsEmbeds, Contract.position])
        XCTAssertEqual(io.outputs, [Contract.logits])
        let layers = try XCTUnwrap(artifact.chunks.first { $0.states != nil })
        let width = try XCTUnwrap(llm.hiddenSize)
        let allowed: Set = [
            Contract.inputsEmbeds, Contract.position, Contract.lastIndex, Contract.hiddenName(llm.numLayers),
            Contract.logits,
        ]
        let prefill = Contract.prefillFunction(llm.prefillLength)
        for budget in [nil, Double(layers.bytes) / 1_048_576 * 1.01] {
            let backend = FakeStatefulBackend()
            let pipelines = try schedulers(artifact, backend, budgetMB: budget)
            XCTAssertEqual(pipelines.0.plan.resident, budget == nil ? [0, 1] : [], "every chunk streamed")
            let decoder = decoder(llm, pipelines)
            // S = the prompt's sum; each token is S mod V, then S grows by it (the decode row the state gained)
            let first = try decoder.generate(prompt([3, 5, 7], width: width), maxNewTokens: 4)
            XCTAssertEqual(first.tokens, [15, 30, 60, 120])
            XCTAssertEqual(try decoder.generate(prompt([1, 2], width: width), maxNewTokens: 4).tokens, [3, 6, 12, 24])

            let made = backend.made
            XCTAssertEqual(made.count, 2, "one state per generation, for the one stateful chunk")
            XCTAssertFalse(made[0] === made[1])
            let calls = backend.calls
            let generation = [prefill, prefill] + Array(repeating: Contract.decode, count: 6)
            XCTAssertEqual(calls.map(\.function), generation + generation)
            for (index, call) in calls.enumerated() {
                if call.chunk == layers.name {
                    XCTAssertTrue(call.state === made[index / generation.count], "call \(index)")
                } else {
                    XCTAssertNil(call.state)
                }
                XCTAssertTrue(call.tensors.isSubset(of: allowed), "\(call.tensors)")
            }
            XCTAssertEqual(made[0].rows.count, llm.prefillLength, "prefill wrote its P rows")
            XCTAssertEqual((0..<7).map { made[0].rows[$0] }, [3, 5, 7, 15, 30, 60, 0], "decode wrote rows 3...5")
            XCTAssertEqual((0..<6).map { made[1].rows[$0] }, [1, 2, 3, 6, 12, 0])
        }
    }

    func testStatefulChunksNeedTheGenerationsStatesAndABackendThatKeepsState() throws {
        let artifact = try artifact("language-model-coreml")
        let llm = try XCTUnwrap(artifact.manifest.llm)
        let width = try XCTUnwrap(llm.hiddenSize)
        let feeds = [
            Contract.inputsEmbeds: Tensor(shape: [1, 1, width], floats: [Float](repeating: 1, count: width)),
            Contract.position: Tensor(shape: [1], values: .int32([0])),
        ]
        let (_, decode) = try schedulers(artifact, FakeStatefulBackend())
        XCTAssertThrowsError(try decode.run(feeds)) {
            XCTAssertTrue("\($0)".contains("keeps its KV cache as model state"), "\($0)")
        }
        XCTAssertThrowsError(try decode.run(feeds, states: ChunkStates())) {
            XCTAssertEqual("\($0)", "decode into a cache no prefill wrote")
        }
        let (_, stateless) = try schedulers(artifact, FakeBackend())
        XCTAssertThrowsError(try stateless.run(feeds, states: ChunkStates())) {
            XCTAssertTrue("\($0)".contains("FakeBackend keeps no model state"), "\($0)")
        }
    }

    /// The io vector through the same wiring: each decode step is fed every layer's past_* (the previous call's
    /// present_*), and no state is made.
    func testAnIOModelFeedsItsPresentsBackAsPasts() throws {
        let artifact = try artifact("language-model")
        let llm = try XCTUnwrap(artifact.manifest.llm)
        let pasts = (0..<llm.numLayers).flatMap(Contract.pastNames)
        XCTAssertEqual(LanguageModelIO(llm).decodeInputs, [Contract.inputsEmbeds, Contract.position] + pasts)
        XCTAssertEqual(
            LanguageModelIO(llm).outputs, [Contract.logits] + (0..<llm.numLayers).flatMap(Contract.presentNames))
        let backend = FakeBackend()
        let generation = try decoder(llm, try schedulers(artifact, backend))
            .generate(prompt([1, 2], width: try XCTUnwrap(llm.hiddenSize)), maxNewTokens: 3)
        XCTAssertEqual(generation.tokens.count, 3)
        let layers = artifact.chunks[0].name
        let steps = backend.runs.filter { $0.program.function == Contract.decode && $0.program.chunk.name == layers }
        XCTAssertEqual(steps.count, 2)
        for step in steps { XCTAssertTrue(Set(pasts).isSubset(of: step.inputs), "\(step.inputs)") }
    }
}
