package dev.edgetrim.core;

import java.nio.file.Path;

/**
 * What a backend loads: {@code function} of {@code chunk} (null for a chunk without functions) from the program file
 * {@code path}, running {@code method} inside it ({@link Artifact#program}).
 */
public record ChunkProgram(Manifest.Chunk chunk, String function, Path path, String method) {}
