package dev.edgetrim.core;

import java.util.Map;

/**
 * Runs chunk programs (ONNX Runtime, ExecuTorch, a fake in tests). {@code load} runs on the scheduler's loader thread
 * while {@code run} runs another chunk on the caller's thread, and a handle loaded on one is used on the other:
 * implementations must allow that.
 *
 * @param <H> a loaded program
 */
public interface ChunkBackend<H> {
    /** Loads one function of a chunk from its program file. */
    H load(ChunkProgram program) throws Exception;

    /** Runs a loaded chunk: its inputs by name -> its outputs by name. */
    Map<String, Tensor> run(H handle, Map<String, Tensor> inputs) throws Exception;

    /** Releases a loaded chunk; the scheduler never uses the handle again. */
    void unload(H handle);
}
