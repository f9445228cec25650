package dev.edgetrim.core;

/** A problem with the artifact or with what the caller asks of it; the message names it and the fix. */
public class ArtifactException extends Exception {
    public ArtifactException(String message) {
        super(message);
    }

    public ArtifactException(String message, Throwable cause) {
        super(message, cause);
    }
}
