package dev.edgetrim.core;

/** A chunk failed to load (possibly on the loader thread); the message names the chunk, the cause is the backend's. */
public final class ChunkLoadException extends ArtifactException {
    private final String chunk;

    public ChunkLoadException(String chunk, Throwable cause) {
        super("chunk '" + chunk + "' failed to load: " + cause.getClass().getSimpleName() + ": " + cause.getMessage(), cause);
        this.chunk = chunk;
    }

    public String chunk() {
        return chunk;
    }
}
