package dev.edgetrim.core;

import java.nio.file.Path;
import java.util.List;

/**
 * What a backend loads: {@code function} of {@code chunk} (null for a chunk without functions) from the program file
 * {@code path}, running {@code method} inside it ({@link Artifact#program}), with that function's {@code inputs} and
 * {@code outputs} ({@link Artifact#io}).
 */
public record ChunkProgram(Manifest.Chunk chunk, String function, Path path, String method,
        List<Manifest.TensorSpec> inputs, List<Manifest.TensorSpec> outputs) {}
