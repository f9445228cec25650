import XCTest

@testable import EdgetrimCore

/// A backend that records what the scheduler asks, sleeps a little, and computes each output as
/// 1 + the sum of its inputs (+ 100 for the tdtm function).
final class FakeBackend: ChunkBackend, @unchecked Sendable {
    struct Handle {
        let program: ChunkProgram
    }

    struct Failure: Error {}

    let loadDelay: TimeInterval
    let runDelay: TimeInterval
    let failing: Set<String>
    private let lock = NSLock()
    private var entries: [String] = []
    private var fed: [(program: ChunkProgram, inputs: Set<String>)] = []
    private var loaded = 0
    private(set) var mostLoaded = 0

    init(loadDelay: TimeInterval = 0, runDelay: TimeInterval = 0, failing: Set<String> = []) {
        self.loadDelay = loadDelay
        self.runDelay = runDelay
        self.failing = failing
    }

    /// "load a", "run b:tdtm", "unload c" in the order they happened.
    var log: [String] { lock.withLock { entries } }

    /// Each run's program and the names of the inputs it was given.
    var runs: [(program: ChunkProgram, inputs: Set<String>)] { lock.withLock { fed } }

    private func record(_ what: String, _ program: ChunkProgram, loading: Int = 0) {
        lock.withLock {
            entries.append("\(what) \(program.chunk.name)\(program.function.map { ":" + $0 } ?? "")")
            loaded += loading
            mostLoaded = max(mostLoaded, loaded)
        }
    }

    func load(_ program: ChunkProgram) throws -> Handle {
        Thread.sleep(forTimeInterval: loadDelay)
        if failing.contains(program.chunk.name) { throw Failure() }
        record("load", program, loading: 1)
        return Handle(program: program)
    }

    func run(_ handle: Handle, inputs: [String: Tensor]) throws -> [String: Tensor] {
        record("run", handle.program)
        lock.withLock { fed.append((handle.program, Set(inputs.keys))) }
        Thread.sleep(forTimeInterval: runDelay)
        let total = inputs.values.reduce(Float(1)) { $0 + $1.floats.reduce(0, +) }
        let value = total + (handle.program.function == Contract.tdtm ? 100 : 0)
        return Dictionary(
            uniqueKeysWithValues: handle.program.outputs.map { ($0.name, Tensor(shape: [1], floats: [value])) })
    }

    func unload(_ handle: Handle) { record("unload", handle.program, loading: -1) }
}

final class ChunkSchedulerTests: XCTestCase {
    /// chunks: (name, inputs, outputs, MB, functions); every tensor float32 [1]; keys sorted (plain before tdtm).
    func artifact(_ chunks: [(String, [String], [String], Int, [String])], pipelines: [String: [String]]? = nil) throws
        -> Artifact
    {
        func specs(_ names: [String]) -> [[String: Any]] {
            names.map { ["name": $0, "shape": [1], "dtype": "float32"] }
        }
        let manifest: [String: Any] = [
            "schema_version": 1, "kind": Contract.languageModel, "target": Contract.coreml,
            "source": ["name": "fake", "random_weights": true],
            "llm": ["num_layers": 1, "max_length": 8, "prefill_length": 4], "files": [],
            "pipelines": pipelines ?? ["main": chunks.map(\.0)],
            "chunks": chunks.map { name, inputs, outputs, mb, functions -> [String: Any] in
                var chunk: [String: Any] = [
                    "name": name, "inputs": specs(inputs), "outputs": specs(outputs),
                    "files": [["path": "\(name).mlpackage", "role": "program", "bytes": mb << 20, "sha256": "0"]],
                ]
                if !functions.isEmpty {
                    chunk["functions"] = Dictionary(
                        uniqueKeysWithValues: functions.map {
                            ($0, ["file": "\(name).mlpackage", "method": Contract.methodName($0)])
                        })
                }
                return chunk
            },
        ]
        return Artifact(
            root: URL(fileURLWithPath: "/fake"),
            manifest: try Manifest.parse(try JSONSerialization.data(withJSONObject: manifest, options: .sortedKeys)))
    }

    /// a(x) -> h1; b(h1) -> h2, s; c(h2, s) -> y; d(y) -> z: 10 MB each.
    func line() throws -> Artifact {
        try artifact([
            ("a", ["x"], ["h1"], 10, []), ("b", ["h1"], ["h2", "s"], 10, []), ("c", ["h2", "s"], ["y"], 10, []),
            ("d", ["y"], ["z"], 10, []),
        ])
    }

    func testOutputsFlowByName() throws {
        let scheduler = try ChunkScheduler(artifact: try line(), backend: FakeBackend())
        XCTAssertEqual(scheduler.plan.resident, [0, 1, 2, 3])
        XCTAssertEqual(scheduler.inputNames, ["x"])
        XCTAssertEqual(scheduler.outputNames, ["z"])
        // h1 = 3, h2 = s = 4, y = 9, z = 10
        XCTAssertEqual(
            try scheduler.run(["x": Tensor(shape: [1], floats: [2])]), ["z": Tensor(shape: [1], floats: [10])])
        XCTAssertThrowsError(try scheduler.run(["h1": Tensor(shape: [1], floats: [2])])) {
            XCTAssertTrue("\($0)".contains("missing input x for pipeline a/b/c/d"))
        }
        let partial = try ChunkScheduler(
            artifact: try line(), backend: FakeBackend(), inputs: ["x"], outputs: ["s", "y"])
        XCTAssertEqual(
            try partial.run(["x": Tensor(shape: [1], floats: [2])]),
            ["s": Tensor(shape: [1], floats: [4]), "y": Tensor(shape: [1], floats: [9])])
    }

    func testResidentLoadOnceStreamedLoadEveryInvocationAndUnloadAfterRunning() throws {
        let backend = FakeBackend(loadDelay: 0.005, runDelay: 0.005)
        let scheduler = try ChunkScheduler(artifact: try line(), backend: backend, memoryBudgetMB: 35)
        XCTAssertEqual(
            scheduler.plan, MemoryPlan(resident: [0], streamed: [1, 2, 3], overlap: true, budgetBytes: 35 << 20))
        for _ in 0..<3 { _ = try scheduler.run(["x": Tensor(shape: [1], floats: [0])]) }
        let log = backend.log
        XCTAssertEqual(log.filter { $0 == "load a" }.count, 1)
        for name in ["b", "c", "d"] {
            XCTAssertEqual(log.filter { $0 == "run \(name)" }.count, 3)
            XCTAssertGreaterThanOrEqual(log.filter { $0 == "load \(name)" }.count, 3)
            // every run of a streamed chunk is followed by its unload before it runs again
            let mine = log.filter { $0.hasSuffix(" \(name)") && !$0.hasPrefix("load") }
            XCTAssertEqual(mine, Array(repeating: ["run \(name)", "unload \(name)"], count: 3).flatMap { $0 })
        }
        XCTAssertFalse(log.contains("unload a"))
        XCTAssertLessThanOrEqual(backend.mostLoaded, 3, "resident a + the running chunk + the one loading")
        scheduler.close()
        waitUntilBalanced(backend)
        XCTAssertTrue(backend.log.contains("unload a"))
    }

    func testTheNextLoadOverlapsTheCurrentComputeAndWrapsToTheNextInvocation() throws {
        let backend = FakeBackend(loadDelay: 0.03, runDelay: 0.05)
        let scheduler = try ChunkScheduler(artifact: try line(), backend: backend, memoryBudgetMB: 35)
        for _ in 0..<2 { _ = try scheduler.run(["x": Tensor(shape: [1], floats: [0])]) }
        let events = scheduler.timeline.events
        func event(_ chunk: String, _ kind: ChunkTimeline.Event.Kind, _ invocation: Int) throws -> ChunkTimeline.Event {
            try XCTUnwrap(events.first { $0.chunk == chunk && $0.kind == kind && $0.invocation == invocation })
        }
        for (current, next, invocation, nextInvocation) in [
            ("b", "c", 0, 0), ("c", "d", 0, 0), ("d", "b", 0, 1), ("b", "c", 1, 1),
        ] {
            let compute = try event(current, .compute, invocation)
            let load = try event(next, .load, nextInvocation)
            XCTAssertLessThan(load.start, compute.end, "load \(next) starts while \(current) computes")
            XCTAssertGreaterThanOrEqual(load.start, compute.start - 0.01, "load \(next) starts with \(current)")
        }

        let serial = FakeBackend(loadDelay: 0.01, runDelay: 0.01)
        let oneSlot = try ChunkScheduler(artifact: try line(), backend: serial, memoryBudgetMB: 15)
        XCTAssertEqual(
            oneSlot.plan, MemoryPlan(resident: [], streamed: [0, 1, 2, 3], overlap: false, budgetBytes: 15 << 20))
        _ = try oneSlot.run(["x": Tensor(shape: [1], floats: [0])])
        let loads = oneSlot.timeline.events.filter { $0.kind == .load }
        for compute in oneSlot.timeline.events where compute.kind == .compute {
            XCTAssertFalse(
                loads.contains { $0.start < compute.end && compute.start < $0.end }, "nothing loads during a compute")
        }
        XCTAssertEqual(serial.mostLoaded, 1)
    }

    func testFunctionSelection() throws {
        let video = try artifact(
            [
                ("embed", ["latent"], ["hidden_00"], 10, []),
                ("depth_00", ["hidden_00"], ["hidden_01"], 10, [Contract.plain, Contract.tdtm]),
                ("depth_01", ["hidden_01"], ["hidden_02"], 10, [Contract.plain, Contract.tdtm]),
                ("final", ["hidden_02"], ["velocity"], 10, []),
            ], pipelines: [Contract.denoiser: ["embed", "depth_00", "depth_01", "final"]])
        let backend = FakeBackend()
        let scheduler = try ChunkScheduler(artifact: video, backend: backend, memoryBudgetMB: 35)
        let latent = ["latent": Tensor(shape: [1], floats: [0])]
        XCTAssertEqual(try scheduler.run(latent, function: Contract.tdtm)["velocity"]?.floats, [204])
        XCTAssertEqual(try scheduler.run(latent, function: Contract.tdtm)["velocity"]?.floats, [204])
        XCTAssertEqual(try scheduler.run(latent, function: Contract.plain)["velocity"]?.floats, [4])
        XCTAssertEqual(try scheduler.run(latent)["velocity"]?.floats, [4], "nil runs the first function")
        let runs = backend.log.filter { $0.hasPrefix("run depth_00") }
        XCTAssertEqual(runs, ["run depth_00:tdtm", "run depth_00:tdtm", "run depth_00:plain", "run depth_00:plain"])
        XCTAssertTrue(backend.log.contains("run embed"), "a chunk without functions loads with none")
        XCTAssertThrowsError(try scheduler.run(latent, function: "fast")) {
            XCTAssertTrue("\($0)".contains("has no function 'fast'"))
        }
        scheduler.close()
        waitUntilBalanced(backend)

        let resident = FakeBackend()
        let kept = try ChunkScheduler(artifact: video, backend: resident)
        for function in [Contract.plain, Contract.tdtm, Contract.plain, Contract.tdtm] {
            _ = try kept.run(latent, function: function)
        }
        XCTAssertEqual(
            resident.log.filter { $0.hasPrefix("load depth_01") }, ["load depth_01:plain", "load depth_01:tdtm"])
    }

    /// The language-model vector: pipelines prefill and decode run the same chunks, each function with its own
    /// inputs and outputs. A chunk's own are its first function's, so decode checked as them does not line up.
    func testLanguageModelFunctionsLineUpAndRunWithTheirOwnIO() throws {
        let artifact = Artifact(
            root: URL(fileURLWithPath: "/artifact"),
            manifest: try Manifest.parse(Vectors.data("manifests/language-model.json")))
        let llm = try XCTUnwrap(artifact.manifest.llm)
        let presents = (0..<llm.numLayers).flatMap(Contract.presentNames)
        let decodeInputs = [Contract.inputsEmbeds, Contract.position] + (0..<llm.numLayers).flatMap(Contract.pastNames)
        let prefillInputs = [Contract.inputsEmbeds, Contract.lastIndex]
        let outputs = [Contract.logits] + presents
        XCTAssertThrowsError(
            try ChunkScheduler(
                artifact: artifact, backend: FakeBackend(), pipeline: Contract.decode, inputs: decodeInputs,
                outputs: outputs)
        ) {
            XCTAssertTrue("\($0)".contains("chunk 'lm_head' needs 'last_index'"), "\($0)")
        }
        let backend = FakeBackend()
        let prefill = try ChunkScheduler(
            artifact: artifact, backend: backend, pipeline: Contract.prefill, inputs: prefillInputs, outputs: outputs,
            function: Contract.prefillFunction(llm.prefillLength))
        let decode = try ChunkScheduler(
            artifact: artifact, backend: backend, pipeline: Contract.decode, inputs: decodeInputs, outputs: outputs,
            function: Contract.decode)
        func feeds(_ names: [String]) -> [String: Tensor] {
            Dictionary(uniqueKeysWithValues: names.map { ($0, Tensor(shape: [1], floats: [0])) })
        }
        for length in llm.prefillLengths {
            let out = try prefill.run(feeds(prefillInputs), function: Contract.prefillFunction(length))
            XCTAssertEqual(Set(out.keys), Set(outputs))
        }
        XCTAssertEqual(Set(try decode.run(feeds(decodeInputs)).keys), Set(outputs))
        let functions = llm.prefillLengths.map(Contract.prefillFunction) + [Contract.decode]
        XCTAssertEqual(backend.runs.map(\.program.function), functions.flatMap { [$0, $0] })
        for run in backend.runs {
            let function = try XCTUnwrap(run.program.function)
            let entry = try XCTUnwrap(run.program.chunk.functions?[function])
            XCTAssertEqual(run.program.method, Contract.methodName(function))
            XCTAssertEqual(run.program.inputs, try XCTUnwrap(entry.inputs))
            XCTAssertEqual(run.program.outputs, try XCTUnwrap(entry.outputs))
            XCTAssertEqual(run.inputs, Set(run.program.inputs.map(\.name)), "\(run.program.chunk.name).\(function)")
        }
        XCTAssertEqual(
            backend.runs.first?.program.inputs.first?.shape, [1, llm.prefillLengths[0], try XCTUnwrap(llm.hiddenSize)])
        XCTAssertThrowsError(try prefill.run(feeds(prefillInputs), function: Contract.prefillFunction(48))) {
            XCTAssertTrue("\($0)".contains("has no function 'prefill_48'"), "\($0)")
        }

        var manifest = artifact.manifest  // prefill_32 of lm_head takes 31 positions: refused when it first runs
        let bucket = Contract.prefillFunction(32)
        manifest.chunks[1].functions = OrderedMap(
            try XCTUnwrap(manifest.chunks[1].functions).pairs.map { name, entry in
                var entry = entry
                if name == bucket { entry.inputs?[0].shape = [1, 31, 64] }
                return (name, entry)
            })
        let skewed = FakeBackend()
        let scheduler = try ChunkScheduler(
            artifact: Artifact(root: artifact.root, manifest: manifest), backend: skewed, pipeline: Contract.prefill,
            inputs: prefillInputs, outputs: outputs, function: Contract.prefillFunction(llm.prefillLength))
        XCTAssertThrowsError(try scheduler.run(feeds(prefillInputs), function: bucket)) {
            XCTAssertEqual(
                "\($0)",
                "chunk 'lm_head' expects hidden_02 [1, 31, 64] float32 but the previous chunk gives [1, 32, 64] "
                    + "float32: the chunks do not line up, re-export the artifact")
        }
        XCTAssertTrue(skewed.log.isEmpty, "nothing loads or runs before the check")
        XCTAssertNoThrow(try scheduler.run(feeds(prefillInputs)))
    }

    func testTimelineKeepsTheLatestEvents() throws {
        let single = try artifact([("only", ["x"], ["y"], 1, [])])
        let scheduler = try ChunkScheduler(artifact: single, backend: FakeBackend())
        let runs = ChunkTimeline.capacity + 100
        for _ in 0..<runs { _ = try scheduler.run(["x": Tensor(shape: [1], floats: [0])]) }
        let events = scheduler.timeline.events
        XCTAssertEqual(events.count, ChunkTimeline.capacity)
        XCTAssertEqual(events.map(\.invocation), Array(100..<runs))
        XCTAssertTrue(events.allSatisfy { $0.kind == .compute && $0.start <= $0.end })
        XCTAssertEqual(scheduler.invocation, runs)
    }

    func testLoadErrorsNameTheChunk() throws {
        for budget in [nil, 35.0] {  // c loads on the caller's thread, or ahead on the loader queue
            let scheduler = try ChunkScheduler(
                artifact: try line(), backend: FakeBackend(failing: ["c"]), memoryBudgetMB: budget)
            XCTAssertThrowsError(try scheduler.run(["x": Tensor(shape: [1], floats: [0])])) {
                XCTAssertEqual(($0 as? ChunkLoadError)?.chunk, "c")
                XCTAssertTrue("\($0)".hasPrefix("chunk 'c' failed to load: Failure"), "\($0)")
            }
        }
    }

    func testMisalignedChunksAreRefused() throws {
        var shapes = try line()
        shapes = Artifact(
            root: shapes.root,
            manifest: {
                var manifest = shapes.manifest
                manifest.chunks[1].inputs[0].shape = [2]
                return manifest
            }())
        XCTAssertThrowsError(try ChunkScheduler(artifact: shapes, backend: FakeBackend())) {
            XCTAssertEqual(
                "\($0)",
                "chunk 'b' expects h1 [2] float32 but the previous chunk gives [1] float32: the chunks do not line up, "
                    + "re-export the artifact")
        }
        let orphan = try artifact([("a", ["x"], ["h1"], 1, []), ("b", ["h9"], ["y"], 1, [])])
        XCTAssertThrowsError(try ChunkScheduler(artifact: orphan, backend: FakeBackend())) {
            XCTAssertTrue("\($0)".contains("chunk 'b' needs 'h9', which no earlier chunk produces"))
        }
        XCTAssertThrowsError(try ChunkScheduler(artifact: try line(), backend: FakeBackend(), outputs: ["w"])) {
            XCTAssertTrue("\($0)".hasPrefix("no chunk produces w"))
        }
        XCTAssertThrowsError(try ChunkScheduler(artifact: try line(), backend: FakeBackend(), memoryBudgetMB: 5)) {
            XCTAssertEqual(($0 as? MemoryPlanError)?.chunk, "a")
        }
    }

    /// Every load is unloaded (a cancelled load in flight unloads when it finishes).
    func waitUntilBalanced(_ backend: FakeBackend, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(2)
        func count(_ prefix: String) -> Int { backend.log.filter { $0.hasPrefix(prefix) }.count }
        while count("load ") != count("unload "), Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        XCTAssertEqual(count("load "), count("unload "), "every loaded chunk is unloaded", file: file, line: line)
    }
}
