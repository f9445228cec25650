package dev.edgetrim.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.edgetrim.core.VerificationException.Reason;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

/**
 * The conformance artifacts verify (every digest equals the manifest's, the .mlpackage by the folder rule) and every
 * mutation of damaged.json (of an artifact, or of a manifest alone) gets Python's verdict for the same reason.
 */
public class VerificationTest {
    private static final List<String> ARTIFACTS = List.of("vision-onnx", "vision-executorch", "vision-coreml");

    @Test
    public void artifactsVerifyAndEveryDigestEqualsTheManifest() throws Exception {
        int folders = 0;
        for (String name : ARTIFACTS) {
            Path root = Vectors.path("artifacts/" + name);
            Artifact artifact = Artifact.open(root);
            assertEquals(Contract.VISION_ENCODER, artifact.kind());
            List<Manifest.FileEntry> entries = new ArrayList<>(artifact.manifest().files());
            for (Manifest.Chunk chunk : artifact.chunks()) entries.addAll(chunk.files());
            for (Manifest.FileEntry entry : entries) {
                Path file = root.resolve(entry.path());
                if (Files.isDirectory(file)) folders++;
                Verification.Digest digest = Verification.digest(file);
                assertEquals(name + "/" + entry.path(), entry.bytes(), digest.bytes());
                assertEquals(name + "/" + entry.path(), entry.sha256(), digest.sha256());
            }
        }
        assertTrue("the Core ML artifact holds an .mlpackage folder", folders > 0);
    }

    @Test
    public void sha256OfKnownBytes() throws Exception {
        Path file = Files.createTempFile("edgetrim", ".bin");
        try {
            Files.write(file, "abc".getBytes(StandardCharsets.US_ASCII));
            assertEquals(new Verification.Digest(3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
                    Verification.digest(file));
            Files.write(file, new byte[0]);
            assertEquals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                    Verification.digest(file).sha256());
        } finally {
            Files.delete(file);
        }
    }

    @Test
    public void everyDamagedCase() throws Exception {
        JSONArray cases = new JSONArray(Vectors.text("damaged.json"));
        assertEquals(28, cases.length());
        int refused = 0;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject vector = cases.getJSONObject(i);
            String name = vector.getString("name");
            Path work = Files.createTempDirectory("edgetrim-");
            try {
                Path root = work.resolve("artifact");
                if (vector.has("manifest")) {  // a manifest of manifests/ alone
                    Files.createDirectory(root);
                    Files.copy(Vectors.path("manifests/" + vector.getString("manifest") + ".json"),
                            root.resolve(Contract.MANIFEST));
                } else {
                    copyTree(Vectors.path("artifacts/" + vector.getString("artifact")), root);
                }
                mutate(root, vector.getJSONObject("mutation"), work.resolve("moved-out"));
                try {
                    Artifact.open(root);
                    assertEquals(name + ": accepted", vector.getString("verdict"), "accepted");
                } catch (VerificationException error) {
                    refused++;
                    assertEquals(name + ": refused (" + error.getMessage() + ")", vector.getString("verdict"), "refused");
                    assertEquals(name + ": " + error.getMessage(), vector.getString("reason"), error.reason().code());
                }
            } finally {
                deleteTree(work);
            }
        }
        assertTrue(refused > 0 && refused < cases.length());
    }

    /** An int8 embedding table needs its per-row scales listed: refused on reading, before any file is touched. */
    @Test
    public void anInt8EmbeddingWithoutScalesIsRefusedOnReading() throws Exception {
        VerificationException refused = assertThrows(VerificationException.class,
                () -> languageModel(Contract.EMBEDDING_INT8, false));
        assertEquals(Reason.MANIFEST, refused.reason());
        assertEquals("m.json: llm.embedding_dtype is int8 but the artifact lists no embedding_scales file "
                + "(the table's per-row scales): the manifest is damaged, re-export the artifact", refused.getMessage());
        assertEquals(Contract.EMBEDDING_INT8, languageModel(Contract.EMBEDDING_INT8, true).llm().embeddingDtype());
        assertEquals(Contract.EMBEDDING_FLOAT16, languageModel(Contract.EMBEDDING_FLOAT16, false).llm().embeddingDtype());
    }

    /** The language-model vector with {@code embedding_dtype}, and an {@code embedding_scales} file when asked. */
    private static Manifest languageModel(String dtype, boolean scales) throws Exception {
        JSONObject manifest = Vectors.json("manifests/language-model.json");
        manifest.getJSONObject("llm").put("embedding_dtype", dtype);
        if (scales) {
            manifest.getJSONArray("files").put(new JSONObject().put("path", "embed_scales.npy")
                    .put("role", Contract.EMBEDDING_SCALES).put("bytes", 1).put("sha256", "0"));
        }
        return Manifest.parse(manifest.toString().getBytes(StandardCharsets.UTF_8), "m.json");
    }

    @Test
    public void wrongKindAndMissingFolder() {
        VerificationException kind = assertThrows(VerificationException.class,
                () -> Artifact.open(Vectors.path("artifacts/vision-onnx"), List.of(Contract.VLM)));
        assertEquals(Reason.KIND, kind.reason());
        VerificationException none = assertThrows(VerificationException.class,
                () -> Artifact.open(Vectors.path("artifacts/none")));
        assertEquals(Reason.MANIFEST, none.reason());
    }

    /** A change to the valid ONNX manifest -> the reason it is refused for (null: accepted by the parser). */
    private interface Change {
        void apply(JSONObject manifest) throws Exception;
    }

    private static String reason(Change change) throws Exception {
        JSONObject manifest = Vectors.json("artifacts/vision-onnx/manifest.json");
        change.apply(manifest);
        try {
            Manifest.parse(manifest.toString().getBytes(StandardCharsets.UTF_8), "manifest.json");
            return null;
        } catch (VerificationException error) {
            return error.reason().code();
        }
    }

    private static JSONArray fileEntry(String path, Object bytes) throws Exception {
        return new JSONArray().put(new JSONObject().put("path", path).put("role", "x").put("bytes", bytes).put("sha256", "0"));
    }

    @Test
    public void manifestChecksInPythonsOrder() throws Exception {
        assertEquals(null, reason(m -> { }));
        assertEquals("schema_version", reason(m -> {
            m.put("schema_version", 99);
            m.remove("chunks");
        }));
        assertEquals("manifest", reason(m -> m.put("schema_version", true)));
        assertEquals("manifest", reason(m -> m.put("schema_version", 0)));
        assertEquals(null, reason(m -> m.remove("kind")));
        assertEquals("manifest", reason(m -> m.put("kind", Contract.VLM)));
        assertEquals("outside", reason(m -> m.put("files", fileEntry("a/../../b", 1))));
        assertEquals("outside", reason(m -> m.put("files", fileEntry("a\\b", 1))));
        assertEquals("outside", reason(m -> m.put("files", fileEntry("/etc/passwd", 1))));
        assertEquals("manifest", reason(m -> m.put("files", fileEntry("b", "1"))));
        assertEquals("manifest", reason(m -> m.put("source", new JSONObject())));
        assertEquals("manifest", reason(m -> m.getJSONArray("chunks").getJSONObject(0)
                .put("functions", new JSONObject().put("plain", new JSONObject().put("file", "elsewhere.onnx")))));
    }

    /** Applies one mutation of damaged.json as apps/conformance/README.md says. */
    private static void mutate(Path root, JSONObject mutation, Path outside) throws Exception {
        Path target = root.resolve(mutation.optString("file", Contract.MANIFEST));
        switch (mutation.getString("op")) {
            case "none" -> { }
            case "flip_byte" -> {
                byte[] data = Files.readAllBytes(target);
                data[mutation.getInt("offset")] ^= (byte) 0xFF;
                Files.write(target, data);
            }
            case "truncate" -> {
                byte[] data = Files.readAllBytes(target);
                Files.write(target, java.util.Arrays.copyOf(data, mutation.getInt("bytes")));
            }
            case "delete" -> deleteTree(target);
            case "link_outside" -> {
                Files.move(target, outside);
                Files.createSymbolicLink(target, outside);
            }
            case "write" -> Files.write(target, mutation.getString("text").getBytes(StandardCharsets.UTF_8));
            case "set", "delete_key" -> {
                Path file = root.resolve(Contract.MANIFEST);
                JSONObject manifest = new JSONObject(new String(Files.readAllBytes(file), StandardCharsets.UTF_8));
                JSONArray path = mutation.getJSONArray("path");
                Object node = manifest;
                for (int i = 0; i < path.length() - 1; i++) {
                    node = node instanceof JSONArray list ? list.get(path.getInt(i)) : ((JSONObject) node).get(path.getString(i));
                }
                Object last = path.get(path.length() - 1);
                boolean set = mutation.getString("op").equals("set");
                if (node instanceof JSONArray list) {
                    list.put((Integer) last, mutation.get("value"));
                } else if (set) {
                    ((JSONObject) node).put((String) last, mutation.get("value"));
                } else {
                    ((JSONObject) node).remove((String) last);
                }
                Files.write(file, manifest.toString().getBytes(StandardCharsets.UTF_8));
            }
            default -> fail("unknown mutation " + mutation);
        }
    }

    private static void copyTree(Path from, Path to) throws IOException {
        Files.walkFileTree(from, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult preVisitDirectory(Path dir, BasicFileAttributes attrs) throws IOException {
                Files.createDirectories(to.resolve(from.relativize(dir).toString()));
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                Files.copy(file, to.resolve(from.relativize(file).toString()), StandardCopyOption.COPY_ATTRIBUTES);
                return FileVisitResult.CONTINUE;
            }
        });
    }

    private static void deleteTree(Path path) throws IOException {
        if (!Files.exists(path, LinkOption.NOFOLLOW_LINKS)) return;
        if (Files.isDirectory(path, LinkOption.NOFOLLOW_LINKS)) {
            List<Path> children;
            try (var list = Files.list(path)) {
                children = list.collect(java.util.stream.Collectors.toList());
            }
            for (Path child : children) deleteTree(child);
        }
        Files.delete(path);
    }
}
