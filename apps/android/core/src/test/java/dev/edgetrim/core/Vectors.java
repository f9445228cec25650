package dev.edgetrim.core;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;

import org.json.JSONException;
import org.json.JSONObject;

/**
 * The conformance vectors ({@code apps/conformance}): the folder named by the system property
 * {@code edgetrim.conformance}, else the first {@code apps/conformance} above the working directory.
 */
final class Vectors {
    private Vectors() {}

    static final Path ROOT = locate();

    private static Path locate() {
        String property = System.getProperty("edgetrim.conformance");
        if (property != null) return Paths.get(property).toAbsolutePath();
        for (Path dir = Paths.get("").toAbsolutePath(); dir != null; dir = dir.getParent()) {
            Path candidate = dir.resolve("apps").resolve("conformance");
            if (Files.isDirectory(candidate)) return candidate;
        }
        throw new IllegalStateException("apps/conformance not found above " + Paths.get("").toAbsolutePath()
                + ": run from the repository or set -Dedgetrim.conformance=DIR");
    }

    static Path path(String relative) {
        return ROOT.resolve(relative);
    }

    static byte[] bytes(String relative) throws IOException {
        return Files.readAllBytes(path(relative));
    }

    static String text(String relative) throws IOException {
        return new String(bytes(relative), StandardCharsets.UTF_8);
    }

    /** A JSON vector file whose top level is an object. */
    static JSONObject json(String relative) throws IOException, JSONException {
        return new JSONObject(text(relative));
    }

    /** A little-endian float32 file. */
    static float[] float32(String relative) throws IOException {
        ByteBuffer buffer = ByteBuffer.wrap(bytes(relative)).order(ByteOrder.LITTLE_ENDIAN);
        float[] out = new float[buffer.remaining() / 4];
        buffer.asFloatBuffer().get(out);
        return out;
    }
}
