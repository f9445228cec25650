package dev.edgetrim.demo

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import dev.edgetrim.core.Artifact
import dev.edgetrim.core.ChunkBackend
import dev.edgetrim.core.ChunkProgram
import dev.edgetrim.core.ChunkScheduler
import dev.edgetrim.core.Contract
import dev.edgetrim.core.MemoryPlanner
import dev.edgetrim.core.Tensor
import java.nio.FloatBuffer
import java.nio.IntBuffer
import java.nio.LongBuffer
import org.pytorch.executorch.DType
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor as EtTensor

/**
 * The core's chunk scheduler for one pipeline of an artifact, on the backend its target needs. Memory policy (what
 * stays resident, what streams, prefetching) is the core's planner and scheduler; the backends only load, run and
 * unload.
 */
object Pipelines {
    /**
     * [pipeline] null: the artifact's only one. [inputs] / [outputs] null: the first chunk's inputs and the last
     * chunk's outputs (of [function]). [lean] (ONNX Runtime) null: lean sessions when the core's plan streams a chunk,
     * as the Python runtime decides; [overlap]: a streamed chunk i+1 loads while chunk i computes; [function]: what
     * multi-function chunks run unless `run` says otherwise (null: each chunk's first). Throws the core's
     * MemoryPlanException for a budget below the largest chunk.
     */
    fun open(
        artifact: Artifact, pipeline: String?, budgetMB: Double?, threads: Int,
        inputs: List<String>? = null, outputs: List<String>? = null, lean: Boolean? = null, overlap: Boolean = true,
        function: String? = null
    ): ChunkScheduler<*> = when (artifact.target()) {
        Contract.ONNX -> {
            val streams = MemoryPlanner.plan(artifact.pipeline(pipeline), artifact.manifest(), budgetMB, overlap).streamed().isNotEmpty()
            ChunkScheduler(
                artifact, OrtBackend(threads, lean ?: streams), pipeline, budgetMB, overlap, inputs, outputs, function
            )
        }
        Contract.EXECUTORCH ->
            ChunkScheduler(artifact, ExecuTorchBackend(threads), pipeline, budgetMB, overlap, inputs, outputs, function)
        else -> throw IllegalArgumentException(
            "${artifact.target()} artifacts do not run on Android: export with --target onnx or --target executorch")
    }
}

/** The values of an int32 / int64 core tensor as int32 (the core offers float32 and int64 views only). */
private fun Tensor.intValues(): IntArray = longs().let { values -> IntArray(values.size) { values[it].toInt() } }

/** A loaded ONNX chunk: the session and the options it was created with, closed together. */
class OrtChunk(val session: OrtSession, val options: OrtSession.SessionOptions)

/**
 * ONNX Runtime behind the core's ChunkBackend. A session is created from the program's path, never its bytes, so that
 * the external data beside the graph (`<stem>.onnx.data`) is found and memory-mapped. XNNPACK takes the float
 * operators with its own [threads]; ONNX Runtime's intra-op pool stays at one thread without spinning, as ONNX
 * Runtime's XNNPACK guide recommends. Graphs are portable (standard ops) and optimized by ONNX Runtime at every load;
 * chunks saved CPU-optimized (`optimized: ort-extended`, artifacts before 0.3) open with optimizations off.
 *
 * [lean]: no prepacked weight copy and no per-session arena (streamed chunks, as the Python runtime opens them).
 */
class OrtBackend(private val threads: Int, private val lean: Boolean) : ChunkBackend<OrtChunk> {
    private val env = OrtEnvironment.getEnvironment()

    override fun load(program: ChunkProgram): OrtChunk {
        val options = OrtSession.SessionOptions()
        try {
            options.addXnnpack(mapOf("intra_op_num_threads" to threads.toString()))
            options.setIntraOpNumThreads(1)
            options.addConfigEntry("session.intra_op.allow_spinning", "0")
            if (program.chunk().optimized() == Contract.ORT_EXTENDED) {
                options.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.NO_OPT)
            }
            if (lean) {
                options.addConfigEntry("session.disable_prepacking", "1")
                options.setCPUArenaAllocator(false)
            }
            return OrtChunk(env.createSession(program.path().toString(), options), options)
        } catch (e: Exception) {
            options.close()
            throw e
        }
    }

    override fun run(handle: OrtChunk, inputs: Map<String, Tensor>): Map<String, Tensor> {
        val feeds = LinkedHashMap<String, OnnxTensor>()
        try {
            for ((name, tensor) in inputs) feeds[name] = onnxTensor(tensor)
            handle.session.run(feeds).use { result ->
                return result.associate { (name, value) -> name to coreTensor(name, value as OnnxTensor) }
            }
        } finally {
            feeds.values.forEach { it.close() }
        }
    }

    override fun unload(handle: OrtChunk) {
        try {
            handle.session.close()
        } finally {
            handle.options.close()
        }
    }

    private fun onnxTensor(tensor: Tensor): OnnxTensor {
        val shape = tensor.shape().map { it.toLong() }.toLongArray()
        return when (tensor.dtype()) {
            "float32" -> OnnxTensor.createTensor(env, FloatBuffer.wrap(tensor.floats()), shape)
            "int64" -> OnnxTensor.createTensor(env, LongBuffer.wrap(tensor.longs()), shape)
            else -> OnnxTensor.createTensor(env, IntBuffer.wrap(tensor.intValues()), shape)
        }
    }

    /** The buffers ONNX Runtime returns are heap copies of exactly the tensor's values, so `array()` is the data. */
    private fun coreTensor(name: String, value: OnnxTensor): Tensor {
        val shape = value.info.shape.map { it.toInt() }.toIntArray()
        return when (value.info.type) {
            OnnxJavaType.FLOAT -> Tensor.ofFloats(shape, value.floatBuffer.array())
            OnnxJavaType.INT64 -> Tensor.ofLongs(shape, value.longBuffer.array())
            OnnxJavaType.INT32 -> Tensor.ofInts(shape, value.intBuffer.array())
            else -> throw IllegalStateException("output $name is ${value.info.type}: float32, int64 or int32 expected")
        }
    }
}

/** A loaded ExecuTorch chunk: the memory-mapped program, the method that runs, its function's tensor order. */
class ExecuTorchChunk(val module: Module, val method: String, val inputs: List<String>, val outputs: List<String>)

/**
 * ExecuTorch behind the core's ChunkBackend: the program memory-mapped (`Module.LOAD_MODE_MMAP`) with [threads]
 * threads, its method loaded up front so that the load is timed as a load, then `execute` with the inputs in the
 * manifest's order for that function (the program's own order); unload destroys the native module at once rather than at garbage
 * collection.
 */
class ExecuTorchBackend(private val threads: Int) : ChunkBackend<ExecuTorchChunk> {
    override fun load(program: ChunkProgram): ExecuTorchChunk {
        val module = Module.load(program.path().toString(), Module.LOAD_MODE_MMAP, threads)
        val error = module.loadMethod(program.method())
        if (error != 0) {
            module.destroy()
            throw IllegalStateException("ExecuTorch could not load method ${program.method()} of ${program.path()} "
                + "(error 0x${error.toString(16)}): the runtime may be older than the exporter's ExecuTorch")
        }
        return ExecuTorchChunk(
            module, program.method(), program.inputs().map { it.name() }, program.outputs().map { it.name() }
        )
    }

    override fun run(handle: ExecuTorchChunk, inputs: Map<String, Tensor>): Map<String, Tensor> {
        val values = handle.inputs.map { name ->
            EValue.from(executorchTensor(inputs[name] ?: throw IllegalArgumentException("missing input $name")))
        }
        val outputs = handle.module.execute(handle.method, *values.toTypedArray())
        check(outputs.size == handle.outputs.size) {
            "method ${handle.method} returned ${outputs.size} values, the manifest lists ${handle.outputs.size}"
        }
        return handle.outputs.zip(outputs).associate { (name, value) -> name to coreTensor(name, value.toTensor()) }
    }

    override fun unload(handle: ExecuTorchChunk) = handle.module.destroy()

    private fun executorchTensor(tensor: Tensor): EtTensor {
        val shape = tensor.shape().map { it.toLong() }.toLongArray()
        return when (tensor.dtype()) {
            "float32" -> EtTensor.fromBlob(tensor.floats(), shape)
            "int64" -> EtTensor.fromBlob(tensor.longs(), shape)
            else -> EtTensor.fromBlob(tensor.intValues(), shape)
        }
    }

    private fun coreTensor(name: String, tensor: EtTensor): Tensor {
        val shape = tensor.shape().map { it.toInt() }.toIntArray()
        return when (tensor.dtype()) {
            DType.FLOAT -> Tensor.ofFloats(shape, tensor.dataAsFloatArray)
            DType.INT64 -> Tensor.ofLongs(shape, tensor.dataAsLongArray)
            DType.INT32 -> Tensor.ofInts(shape, tensor.dataAsIntArray)
            else -> throw IllegalStateException("output $name is ${tensor.dtype()}: float32, int64 or int32 expected")
        }
    }
}
