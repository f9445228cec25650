// Core ML behind EdgetrimCore's ChunkBackend: one managed model per chunk (and function), in the manner of
// ml-stable-diffusion's ManagedMLModel. Compiled where Core ML exists (iOS, macOS); on Linux this module is
// empty, so none of it is built or run by the Linux CI: it is checked on a Mac (apps/ios/README.md).
#if canImport(CoreML)
import CoreML
import EdgetrimCore
import Foundation

/// Compiles downloaded `.mlpackage` folders once and keeps the compiled `.mlmodelc` keyed by the package's
/// sha256 (from the verified manifest), so a second launch loads without compiling.
public final class CompiledModelCache {
    public let folder: URL

    /// `folder`: where compiled models live (default: Application Support/edgetrim/compiled).
    public init(folder: URL? = nil) throws {
        let base = try folder ?? FileManager.default.url(
            for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        self.folder = folder ?? base.appendingPathComponent("edgetrim/compiled", isDirectory: true)
        try FileManager.default.createDirectory(at: self.folder, withIntermediateDirectories: true)
    }

    /// The compiled model of `package`, compiling it the first time its `sha256` is seen.
    public func compiled(_ package: URL, sha256: String) throws -> URL {
        let target = folder.appendingPathComponent("\(sha256).mlmodelc", isDirectory: true)
        if FileManager.default.fileExists(atPath: target.path) { return target }
        let temporary = try MLModel.compileModel(at: package)  // a temporary location: move it somewhere permanent
        try? FileManager.default.removeItem(at: target)
        try FileManager.default.moveItem(at: temporary, to: target)
        return target
    }
}

/// One chunk (one function of a multifunction package): loaded lazily, unloaded by dropping the MLModel.
public final class ManagedMLModel {
    public let url: URL
    public let functionName: String?
    public let configuration: MLModelConfiguration
    private var model: MLModel?
    private let lock = NSLock()

    /// `functionName`: the function of a multifunction package (nil: the default function).
    public init(compiledURL url: URL, functionName: String?, computeUnits: MLComputeUnits) {
        self.url = url
        self.functionName = functionName
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        if let functionName {
            if #available(iOS 18.0, macOS 15.0, *) { configuration.functionName = functionName }
        }
        self.configuration = configuration
    }

    public var isLoaded: Bool { lock.withLock { model != nil } }

    public func load() throws {
        try lock.withLock {
            if model == nil { model = try MLModel(contentsOf: url, configuration: configuration) }
        }
    }

    public func unload() { lock.withLock { model = nil } }

    /// Load + unload: pays the first-load cost (device-specific compilation) ahead of use.
    public func prewarm() throws {
        try load()
        unload()
    }

    public func perform<T>(_ body: (MLModel) throws -> T) throws -> T {
        try load()
        guard let model = lock.withLock({ model }) else { throw CocoaError(.featureUnsupported) }
        return try body(model)
    }

    /// A fresh state (zeroed buffers) of a stateful model; every function of its package takes it.
    @available(iOS 18.0, macOS 15.0, *)
    public func makeState() throws -> MLState { try perform { $0.makeState() } }
}

/// `ChunkBackend` over Core ML: each (chunk, function) a `ManagedMLModel`; tensors through MLMultiArray. A stateful
/// chunk (its KV cache as model state, iOS 18) runs every function with the `MLState` the scheduler keeps for the
/// generation (`ChunkStates`), made by whichever function runs first.
public final class CoreMLBackend: ChunkBackend, @unchecked Sendable {  // immutable after init
    public let cache: CompiledModelCache
    public let computeUnits: MLComputeUnits

    public init(cache: CompiledModelCache, computeUnits: MLComputeUnits = .all) {
        self.cache = cache
        self.computeUnits = computeUnits
    }

    public func load(_ program: ChunkProgram) throws -> ManagedMLModel {
        let name = program.url.lastPathComponent
        let digest = program.chunk.files.first { $0.path.hasSuffix(name) }?.sha256 ?? name
        let compiled = try cache.compiled(program.url, sha256: digest)
        let function = program.chunk.functions == nil ? nil : program.method
        let managed = ManagedMLModel(compiledURL: compiled, functionName: function, computeUnits: computeUnits)
        try managed.load()
        return managed
    }

    public func run(_ handle: ManagedMLModel, inputs: [String: Tensor]) throws -> [String: Tensor] {
        try handle.perform { model in
            MultiArrays.tensors(try model.prediction(from: try MultiArrays.features(inputs)))
        }
    }

    public func makeState(_ handle: ManagedMLModel) throws -> AnyObject {
        guard #available(iOS 18.0, macOS 15.0, *) else { throw Self.stateNeedsIOS18 }
        return try handle.makeState()
    }

    public func run(_ handle: ManagedMLModel, inputs: [String: Tensor], state: AnyObject) throws -> [String: Tensor] {
        guard #available(iOS 18.0, macOS 15.0, *) else { throw Self.stateNeedsIOS18 }
        guard let state = state as? MLState else { throw ArtifactError("\(type(of: state)) is not a Core ML state") }
        return try handle.perform { model in
            let features = try MultiArrays.features(inputs)
            let outputs = try model.prediction(from: features, using: state, options: MLPredictionOptions())
            return MultiArrays.tensors(outputs)
        }
    }

    public func unload(_ handle: ManagedMLModel) { handle.unload() }

    private static var stateNeedsIOS18: ArtifactError {
        ArtifactError(
            "the artifact keeps its KV cache as Core ML state, which needs iOS 18: update, or re-export with "
                + "`--kv-cache io`")
    }
}

/// Conversions between the core's tensors and MLMultiArray (Core ML has no int64: integers are int32).
public enum MultiArrays {
    /// Named inputs as a feature provider.
    public static func features(_ inputs: [String: Tensor]) throws -> MLDictionaryFeatureProvider {
        try MLDictionaryFeatureProvider(dictionary: inputs.mapValues { MLFeatureValue(multiArray: try array($0)) })
    }

    /// The multi-array outputs of a prediction, by name.
    public static func tensors(_ outputs: any MLFeatureProvider) -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for name in outputs.featureNames {
            if let array = outputs.featureValue(for: name)?.multiArrayValue { result[name] = tensor(array) }
        }
        return result
    }

    public static func array(_ tensor: Tensor) throws -> MLMultiArray {
        let shape = tensor.shape.map { NSNumber(value: $0) }
        switch tensor.values {
        case .float32(let values):
            let array = try MLMultiArray(shape: shape, dataType: .float32)
            values.withUnsafeBufferPointer { source in
                array.withUnsafeMutableBytes { raw, _ in raw.copyMemory(from: UnsafeRawBufferPointer(source)) }
            }
            return array
        case .int32(let values):
            let array = try MLMultiArray(shape: shape, dataType: .int32)
            values.withUnsafeBufferPointer { source in
                array.withUnsafeMutableBytes { raw, _ in raw.copyMemory(from: UnsafeRawBufferPointer(source)) }
            }
            return array
        case .int64(let values):
            return try array(Tensor(shape: tensor.shape, values: .int32(values.map { Int32($0) })))
        }
    }

    /// A contiguous copy of `array` (float16 outputs widened to float32).
    public static func tensor(_ array: MLMultiArray) -> Tensor {
        let shape = array.shape.map(\.intValue)
        let count = shape.reduce(1, *)
        switch array.dataType {
        case .int32:
            return Tensor(shape: shape, values: .int32((0..<count).map { array[$0].int32Value }))
        default:
            return Tensor(shape: shape, values: .float32((0..<count).map { array[$0].floatValue }))
        }
    }
}
#endif
