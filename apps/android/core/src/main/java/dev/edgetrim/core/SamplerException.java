package dev.edgetrim.core;

/** A sampling plan that cannot run, or a velocity that does not match the latent; the message names the fix. */
public final class SamplerException extends ArtifactException {
    public SamplerException(String message) {
        super(message);
    }
}
