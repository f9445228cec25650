package dev.edgetrim.core;

/**
 * Why an artifact is refused, with a message naming the problem and the fix (as the Python runtime says it).
 *
 * <p>Checks run in the order manifest -> each listed file (chunk files, then top-level data): exists, inside the
 * folder, size, sha256. {@link Reason#code()} is the name the conformance vectors use ({@code damaged.json}).
 */
public final class VerificationException extends ArtifactException {
    /** The refusal reasons of {@code damaged.json}, plus {@link #KIND} (no conformance reason). */
    public enum Reason {
        /** A listed file is absent. */
        MISSING("missing"),
        /** A listed file's bytes differ from the manifest's. */
        SIZE("size"),
        /** A listed file's digest differs from the manifest's. */
        SHA256("sha256"),
        /** A listed path, or a symlink, resolves outside the artifact folder. */
        OUTSIDE("outside"),
        /** The manifest is newer than this runtime. */
        SCHEMA_VERSION("schema_version"),
        /**
         * Not JSON, not a manifest, an unknown kind, a missing key, duplicate chunk names, a pipeline naming an unknown
         * chunk, a chunk without a program file, a field of the wrong type, an int8 embedding table without its scales.
         */
        MANIFEST("manifest"),
        /** A sound artifact of a kind the caller does not take ({@link Artifact#open(java.nio.file.Path, java.util.Collection)}). */
        KIND("kind");

        private final String code;

        Reason(String code) {
            this.code = code;
        }

        /** The conformance name: missing, size, sha256, outside, schema_version, manifest (or kind). */
        public String code() {
            return code;
        }
    }

    private final Reason reason;

    public VerificationException(Reason reason, String message) {
        super(message);
        this.reason = reason;
    }

    public Reason reason() {
        return reason;
    }
}
