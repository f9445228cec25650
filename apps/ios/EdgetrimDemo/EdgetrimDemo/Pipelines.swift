import CoreML
import EdgetrimCore
import EdgetrimCoreML
import ExecuTorch
import Foundation

/// One pipeline of an artifact, whatever runs it: Core ML for .mlpackage chunks, ExecuTorch for .pte. Stateful
/// chunks (a Core ML language model's KV cache, iOS 18) keep their model state in the generation's `states`.
protocol PipelineRunner: AnyObject {
    var plan: MemoryPlan { get }
    var timeline: ChunkTimeline { get }
    func run(_ feeds: [String: EdgetrimCore.Tensor], function: String?, states: ChunkStates?) throws
        -> [String: EdgetrimCore.Tensor]
}

extension PipelineRunner {
    /// A pipeline without stateful chunks.
    func run(_ feeds: [String: EdgetrimCore.Tensor], function: String?) throws -> [String: EdgetrimCore.Tensor] {
        try run(feeds, function: function, states: nil)
    }
}

extension ChunkScheduler: PipelineRunner {}

enum Pipelines {
    /// The chunk scheduler of `pipeline` on the backend the artifact's target needs; `function`: what its
    /// multi-function chunks run unless `run` says otherwise (nil: each chunk's first).
    static func open(
        _ artifact: Artifact, pipeline: String, budgetMB: Double?, units: MLComputeUnits,
        inputs: [String]? = nil, outputs: [String]? = nil, function: String? = nil
    ) throws -> PipelineRunner {
        switch artifact.target {
        case Contract.coreml:
            let backend = CoreMLBackend(cache: try CompiledModelCache(), computeUnits: units)
            return try ChunkScheduler(artifact: artifact, backend: backend, pipeline: pipeline,
                                      memoryBudgetMB: budgetMB, inputs: inputs, outputs: outputs, function: function)
        case Contract.executorch:
            return try ChunkScheduler(artifact: artifact, backend: ExecuTorchBackend(), pipeline: pipeline,
                                      memoryBudgetMB: budgetMB, inputs: inputs, outputs: outputs, function: function)
        default:
            throw ArtifactError("\(artifact.target) artifacts do not run on iOS: export with --target coreml or executorch")
        }
    }
}

/// ExecuTorch behind the core's ChunkBackend: the program memory-mapped, one method loaded, run with the function's
/// inputs in the manifest's order, unload.
final class ExecuTorchBackend: ChunkBackend, @unchecked Sendable {
    final class Loaded {
        let module: Module
        let method: String
        let inputs: [String]
        let outputs: [String]
        init(module: Module, method: String, inputs: [String], outputs: [String]) {
            self.module = module
            self.method = method
            self.inputs = inputs
            self.outputs = outputs
        }
    }

    func load(_ program: ChunkProgram) throws -> Loaded {
        let module = Module(filePath: program.url.path, loadMode: .mmap)
        try module.load(program.method)
        return Loaded(module: module, method: program.method,
                      inputs: program.inputs.map(\.name), outputs: program.outputs.map(\.name))
    }

    func run(_ handle: Loaded, inputs: [String: EdgetrimCore.Tensor]) throws -> [String: EdgetrimCore.Tensor] {
        let values: [ValueConvertible] = try handle.inputs.map { name in
            guard let tensor = inputs[name] else { throw ArtifactError("missing input \(name)") }
            switch tensor.values {
            case .float32(let v): return ExecuTorch.Tensor<Float>(v, shape: tensor.shape)
            case .int32(let v): return ExecuTorch.Tensor<Int32>(v, shape: tensor.shape)
            case .int64(let v): return ExecuTorch.Tensor<Int64>(v, shape: tensor.shape)
            }
        }
        let outputs = try handle.module.execute(handle.method, values)
        var result: [String: EdgetrimCore.Tensor] = [:]
        for (name, value) in zip(handle.outputs, outputs) {
            if let t: ExecuTorch.Tensor<Float> = value.tensor() {
                result[name] = EdgetrimCore.Tensor(shape: t.shape, floats: t.scalars())
            } else if let t: ExecuTorch.Tensor<Int64> = value.tensor() {
                result[name] = EdgetrimCore.Tensor(shape: t.shape, values: .int64(t.scalars()))
            }
        }
        return result
    }

    func unload(_ handle: Loaded) { handle.module.unload(handle.method) }
}
