import Dispatch
import Foundation

/// Runs chunk programs (Core ML, ExecuTorch, a fake in tests). Sendable: `load` may run on the scheduler's
/// loader queue while `run` runs another chunk on the caller's thread, and a handle loaded on one is used
/// on the other.
///
/// A stateful chunk (`Manifest.Chunk.states`) runs with a model state its backend makes (`makeState`, Core ML's
/// `MLState`) and the scheduler keeps in the caller's `ChunkStates`; backends without model state keep the
/// defaults, which refuse such chunks.
public protocol ChunkBackend: Sendable {
    associatedtype Handle
    /// Loads one function of a chunk from its program file.
    func load(_ program: ChunkProgram) throws -> Handle
    /// Runs a loaded chunk: its inputs by name -> its outputs by name.
    func run(_ handle: Handle, inputs: [String: Tensor]) throws -> [String: Tensor]
    /// A fresh (zeroed) model state for the stateful chunk `handle` runs a function of; every function of the chunk
    /// takes it.
    func makeState(_ handle: Handle) throws -> AnyObject
    /// Runs a loaded function of a stateful chunk, which reads and writes `state` in place.
    func run(_ handle: Handle, inputs: [String: Tensor], state: AnyObject) throws -> [String: Tensor]
    /// Releases a loaded chunk; the scheduler never uses the handle again.
    func unload(_ handle: Handle)
}

extension ChunkBackend {
    public func makeState(_ handle: Handle) throws -> AnyObject { throw statelessBackend() }

    public func run(_ handle: Handle, inputs: [String: Tensor], state: AnyObject) throws -> [String: Tensor] {
        throw statelessBackend()
    }

    private func statelessBackend() -> ArtifactError {
        ArtifactError(
            "\(Self.self) keeps no model state, and the chunk keeps its KV cache as Core ML state: run it with Core ML "
                + "on iOS 18, or re-export with `--kv-cache io`")
    }
}

/// The model state of a generation's stateful chunks (`Manifest.Chunk.states`: a Core ML language model's KV cache,
/// `llm.kv_cache` state), by chunk name. A chunk's state is made by its backend the first time the chunk runs with
/// these states (prefill), then read and written in place by every later run (decode, from any scheduler over the
/// same chunks); it lives as long as this object: make one per generation.
public final class ChunkStates {
    private var states: [String: AnyObject] = [:]

    public init() {}

    /// `chunk`'s state, made by `make` the first time.
    func state(_ chunk: String, make: () throws -> AnyObject) rethrows -> AnyObject {
        if let state = states[chunk] { return state }
        let state = try make()
        states[chunk] = state
        return state
    }
}

/// What a backend loads: `function` of `chunk` (nil for a chunk without functions) from the program file
/// `url`, running `method` inside it (`Artifact.program`), with that function's `inputs` and `outputs`
/// (`Artifact.io`).
public struct ChunkProgram: Sendable {
    public let chunk: Manifest.Chunk
    public let function: String?
    public let url: URL
    public let method: String
    public let inputs: [Manifest.TensorSpec]
    public let outputs: [Manifest.TensorSpec]
}

/// A chunk failed to load (possibly on the loader queue); the message names the chunk.
public struct ChunkLoadError: Error, CustomStringConvertible, LocalizedError {
    public let chunk: String
    public let underlying: Error

    public var description: String { "chunk '\(chunk)' failed to load: \(type(of: underlying)): \(underlying)" }
    public var errorDescription: String? { description }
}

/// Runs one pipeline of an artifact in order under a memory budget (Python's `ChunkLoader`), passing
/// tensors by name: `run(feeds) -> outputs`.
///
/// The resident prefix of the `MemoryPlan` loads once and stays. Streamed chunks load before use and are
/// unloaded right after they run; with overlap, chunk i+1 loads on a background queue while chunk i
/// computes, and after the last chunk the first streamed chunk of the next invocation starts loading.
/// `run(_:function:states:)` picks the function of multi-function chunks, each chunk running with that function's
/// inputs and outputs (`Artifact.io`); each (chunk, function) loads apart. Stateful chunks run with their state in
/// `states`. Call `run` and `warm` from one thread at a time; `timeline` may be read from any thread.
public final class ChunkScheduler<Backend: ChunkBackend> {
    public let artifact: Artifact
    /// The pipeline's chunks in run order.
    public let chunks: [Manifest.Chunk]
    public let plan: MemoryPlan
    /// The function of multi-function chunks `run` and `warm` run unless told otherwise (nil: each chunk's first).
    public let function: String?
    /// What the caller feeds (default: the first chunk's inputs, of `function`).
    public let inputNames: [String]
    /// What `run` returns (default: the last chunk's outputs, of `function`).
    public let outputNames: [String]
    /// Load and compute events, the latest `ChunkTimeline.capacity`.
    public let timeline = ChunkTimeline()
    /// Completed runs.
    public private(set) var invocation = 0

    private let loader: Loader
    private let queue = DispatchQueue(label: "edgetrim.chunk-loader", qos: .userInitiated)
    private var resident: [Key: Backend.Handle] = [:]
    private var pending: [Key: PendingLoad<Backend.Handle>] = [:]
    /// The functions whose chunks were checked to line up.
    private var checked: Set<String?> = []

    /// A loaded program: a chunk index and the function (nil for a chunk without functions).
    private struct Key: Hashable {
        let index: Int
        let function: String?
    }

    /// Checks that the pipeline's chunks line up for `function` (every input fed or produced earlier with the
    /// same shape and dtype, every output produced) and plans memory; loads nothing yet. Other functions are
    /// checked when they first run.
    public init(
        artifact: Artifact, backend: Backend, pipeline: String? = nil, memoryBudgetMB: Double? = nil,
        overlap: Bool = true, inputs: [String]? = nil, outputs: [String]? = nil, function: String? = nil
    ) throws {
        self.artifact = artifact
        self.function = function
        chunks = try artifact.pipeline(pipeline)
        inputNames = inputs ?? chunks.first.map { artifact.io($0, function: function).inputs.map(\.name) } ?? []
        outputNames = outputs ?? chunks.last.map { artifact.io($0, function: function).outputs.map(\.name) } ?? []
        try Self.checkIO(artifact, chunks, inputs: inputNames, outputs: outputNames, function: function)
        plan = try planMemory(chunks: chunks, of: artifact.manifest, budgetMB: memoryBudgetMB, overlap: overlap)
        loader = Loader(artifact: artifact, backend: backend, chunks: chunks, timeline: timeline)
        checked = [function]
    }

    deinit { close() }

    /// Every chunk input of `function` must come from the pipeline `inputs` or an earlier chunk, with the same
    /// shape and dtype, and some chunk must produce each of `outputs` (Python's `check_io` and `_check`).
    static func checkIO(
        _ artifact: Artifact, _ chunks: [Manifest.Chunk], inputs: [String], outputs: [String], function: String?
    ) throws {
        let fed = Set(inputs)
        var available: [String: Manifest.TensorSpec] = [:]
        var produced: Set<String> = []
        for chunk in chunks {
            let io = artifact.io(chunk, function: function)
            for spec in io.inputs {
                if let given = available[spec.name] {
                    guard given.shape == spec.shape, given.dtype == spec.dtype else {
                        throw ArtifactError(
                            "chunk '\(chunk.name)' expects \(spec.name) \(spec.shape) \(spec.dtype) but the previous "
                                + "chunk gives \(given.shape) \(given.dtype): the chunks do not line up, "
                                + "re-export the artifact")
                    }
                } else if fed.contains(spec.name) {
                    available[spec.name] = spec
                } else {
                    throw ArtifactError(
                        "chunk '\(chunk.name)' needs '\(spec.name)', which no earlier chunk produces: "
                            + "the chunks do not line up, re-export the artifact")
                }
            }
            for spec in io.outputs {
                available[spec.name] = spec
                produced.insert(spec.name)
            }
        }
        let missing = outputs.filter { !produced.contains($0) }
        guard missing.isEmpty else {
            throw ArtifactError(
                "no chunk produces \(missing.joined(separator: ", ")): the artifact does not match this runtime")
        }
    }

    /// Loads the resident chunks of `function` (nil: the scheduler's) now (otherwise they load on first use).
    public func warm(function: String? = nil) throws {
        for index in plan.resident { _ = try acquire(index, function ?? self.function) }
    }

    /// Runs the pipeline once; `function` selects the variant of multi-function chunks (nil: the scheduler's
    /// `function`), checked to line up the first time it runs; stateful chunks read and write their state in `states`
    /// (made on their first run), which a pipeline with such chunks requires.
    public func run(_ feeds: [String: Tensor], function: String? = nil, states: ChunkStates? = nil) throws
        -> [String: Tensor]
    {
        let function = function ?? self.function
        if !checked.contains(function) {
            try Self.checkIO(artifact, chunks, inputs: inputNames, outputs: outputNames, function: function)
            checked.insert(function)
        }
        let absent = inputNames.filter { feeds[$0] == nil }
        guard absent.isEmpty else {
            throw ArtifactError(
                "missing input \(absent.joined(separator: ", ")) for pipeline "
                    + chunks.map(\.name).joined(separator: "/"))
        }
        var env = feeds
        for (index, chunk) in chunks.enumerated() {
            let handle = try acquire(index, function)
            let streamed = !plan.resident.contains(index)
            defer { if streamed { loader.backend.unload(handle) } }
            if plan.overlap, let next = nextStreamed(after: index), next != index {
                prefetch(next, function, invocation: invocation + (next <= index ? 1 : 0))
            }
            var inputs: [String: Tensor] = [:]
            for spec in artifact.io(chunk, function: function).inputs { inputs[spec.name] = env[spec.name] }
            let start = timeline.now()
            let outputs: [String: Tensor]
            if chunk.states == nil {
                outputs = try loader.backend.run(handle, inputs: inputs)
            } else {
                guard let states else {
                    throw ArtifactError(
                        "chunk '\(chunk.name)' keeps its KV cache as model state: run it with the generation's "
                            + "ChunkStates")
                }
                let state = try states.state(chunk.name) { try loader.backend.makeState(handle) }
                outputs = try loader.backend.run(handle, inputs: inputs, state: state)
            }
            timeline.add(
                .init(chunk: chunk.name, kind: .compute, start: start, end: timeline.now(), invocation: invocation))
            env.merge(outputs) { $1 }
        }
        invocation += 1
        var result: [String: Tensor] = [:]
        for name in outputNames {
            guard let tensor = env[name] else {
                throw ArtifactError("the chunks returned no \(name): the artifact does not match this runtime")
            }
            result[name] = tensor
        }
        return result
    }

    /// Unloads every chunk and drops pending loads (a load in flight is unloaded when it finishes).
    public func close() {
        for load in pending.values { load.cancel(unload: loader.backend.unload) }
        pending.removeAll()
        for handle in resident.values { loader.backend.unload(handle) }
        resident.removeAll()
    }

    /// Backends are per (chunk, function): a chunk without functions has one whatever is asked, and nil
    /// means a multi-function chunk's first function.
    private func key(_ index: Int, _ function: String?) -> Key {
        guard let functions = chunks[index].functions, let first = functions.keys.first else {
            return Key(index: index, function: nil)
        }
        return Key(index: index, function: function ?? first)
    }

    private func acquire(_ index: Int, _ function: String?) throws -> Backend.Handle {
        let key = key(index, function)
        if let handle = resident[key] { return handle }
        for stale in pending.keys where stale.index == index && stale != key {  // prefetched another function
            pending.removeValue(forKey: stale)?.cancel(unload: loader.backend.unload)
        }
        let handle = try pending.removeValue(forKey: key)?.wait() ?? loader.load(key, invocation: invocation)
        if plan.resident.contains(index) { resident[key] = handle }
        return handle
    }

    private func prefetch(_ index: Int, _ function: String?, invocation: Int) {
        let key = key(index, function)
        guard pending[key] == nil, resident[key] == nil else { return }
        let load = PendingLoad<Backend.Handle>()
        pending[key] = load
        queue.async { [loader] in
            load.perform({ try loader.load(key, invocation: invocation) }, unload: loader.backend.unload)
        }
    }

    /// The streamed chunk that runs after `index` (wrapping to the next invocation).
    private func nextStreamed(after index: Int) -> Int? {
        plan.streamed.first { $0 > index } ?? plan.streamed.first
    }

    /// What loads need, shared with the loader queue (immutable; the timeline locks).
    private struct Loader: Sendable {
        let artifact: Artifact
        let backend: Backend
        let chunks: [Manifest.Chunk]
        let timeline: ChunkTimeline

        func load(_ key: Key, invocation: Int) throws -> Backend.Handle {
            let chunk = chunks[key.index]
            let (url, method) = try artifact.program(chunk, function: key.function)
            let (inputs, outputs) = artifact.io(chunk, function: key.function)
            let program = ChunkProgram(
                chunk: chunk, function: key.function, url: url, method: method, inputs: inputs, outputs: outputs)
            let start = timeline.now()
            let handle: Backend.Handle
            do {
                handle = try backend.load(program)
            } catch {
                throw ChunkLoadError(chunk: chunk.name, underlying: error)
            }
            timeline.add(
                .init(chunk: chunk.name, kind: .load, start: start, end: timeline.now(), invocation: invocation))
            return handle
        }
    }
}

/// A load running on the loader queue: `wait` blocks for its handle (or rethrows its error); `cancel` drops
/// it, unloading the handle once there is one.
private final class PendingLoad<Handle>: @unchecked Sendable {
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<Handle, Error>?
    private var cancelled = false

    func perform(_ load: () throws -> Handle, unload: (Handle) -> Void) {
        defer { done.signal() }
        guard !lock.withLock({ cancelled }) else { return }
        let outcome = Result { try load() }
        let dropped: Handle? = lock.withLock {
            guard cancelled else {
                result = outcome
                return nil
            }
            return try? outcome.get()
        }
        dropped.map(unload)
    }

    func wait() throws -> Handle {
        done.wait()
        guard let result = lock.withLock({ result }) else { throw CancellationError() }
        return try result.get()
    }

    func cancel(unload: (Handle) -> Void) {
        let dropped: Handle? = lock.withLock {
            cancelled = true
            defer { result = nil }
            return try? result?.get()
        }
        dropped.map(unload)
    }
}

/// The latest load / compute events of a scheduler, for an on-screen timeline; thread-safe.
public final class ChunkTimeline: @unchecked Sendable {
    /// Events kept: a decode loop runs the pipeline once per token.
    public static let capacity = 4096

    public struct Event: Equatable, Sendable {
        public enum Kind: String, Sendable { case load, compute }

        public let chunk: String
        public let kind: Kind
        /// Seconds since the timeline was created (monotonic clock).
        public let start: Double
        public let end: Double
        /// The run the event belongs to (a prefetch belongs to the run that uses it).
        public let invocation: Int
    }

    private let lock = NSLock()
    private let origin = DispatchTime.now().uptimeNanoseconds
    private var buffer: [Event] = []

    /// Oldest first, at most `capacity`.
    public var events: [Event] { lock.withLock { Array(buffer.suffix(Self.capacity)) } }

    /// Seconds since the timeline was created.
    public func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds - origin) / 1e9 }

    func add(_ event: Event) {
        lock.withLock {
            buffer.append(event)
            if buffer.count >= 2 * Self.capacity { buffer.removeFirst(buffer.count - Self.capacity) }
        }
    }
}
