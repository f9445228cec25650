package dev.edgetrim.core;

import dev.edgetrim.core.VerificationException.Reason;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/** An artifact folder and its manifest, with the lookups the runtime needs (Python's {@code Artifact}). */
public record Artifact(Path root, Manifest manifest) {
    /** A chunk function's program file and the method to run inside it ({@code forward} for a single program). */
    public record Program(Path path, String method) {}

    /** The inputs and outputs of one function of a chunk ({@link #io}). */
    public record IO(List<Manifest.TensorSpec> inputs, List<Manifest.TensorSpec> outputs) {}

    /** Reads and checks {@code root/manifest.json} (Python's {@code read_manifest}); does not touch the listed files. */
    public static Artifact read(Path root) throws VerificationException {
        if (!Files.isDirectory(root)) {
            throw new VerificationException(Reason.MANIFEST,
                    root + " is not a folder: pass the folder edgetrim export wrote (it holds manifest.json)");
        }
        Path file = root.resolve(Contract.MANIFEST);
        byte[] data;
        try {
            if (!Files.isRegularFile(file)) throw new IOException("not a file");
            data = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new VerificationException(Reason.MANIFEST,
                    root + " has no " + Contract.MANIFEST + ": pass a folder written by edgetrim export");
        }
        return new Artifact(root, Manifest.parse(data, file.toString()));
    }

    /** Reads, checks and sha256-verifies an artifact of any kind (Python's {@code open_artifact}). */
    public static Artifact open(Path root) throws VerificationException {
        return open(root, Contract.KINDS);
    }

    /** Reads, checks and sha256-verifies an artifact; refuses one whose kind is not in {@code kinds} (reason KIND). */
    public static Artifact open(Path root, Collection<String> kinds) throws VerificationException {
        Artifact artifact = read(root);
        if (!kinds.contains(artifact.kind())) {
            throw new VerificationException(Reason.KIND, root + " is a " + artifact.kind() + " artifact; this takes "
                    + String.join(" or ", kinds) + " artifacts: pass an artifact of that kind");
        }
        Verification.verifyFiles(artifact);
        return artifact;
    }

    public String kind() {
        return manifest.kind();
    }

    public String target() {
        return manifest.target();
    }

    public List<Manifest.Chunk> chunks() {
        return manifest.chunks();
    }

    /** Pipeline name -> chunk names in run order (one pipeline, {@code main}, when the manifest names none). */
    public Map<String, List<String>> pipelines() {
        if (manifest.pipelines() != null && !manifest.pipelines().isEmpty()) return manifest.pipelines();
        Map<String, List<String>> main = new LinkedHashMap<>();
        main.put(Contract.DEFAULT_PIPELINE, chunks().stream().map(Manifest.Chunk::name).collect(Collectors.toList()));
        return main;
    }

    /** The chunks of pipeline {@code name} in run order (null: the only pipeline, or {@code main}). */
    public List<Manifest.Chunk> pipeline(String name) throws ArtifactException {
        Map<String, List<String>> pipelines = pipelines();
        String chosen = name != null ? name
                : pipelines.size() == 1 ? pipelines.keySet().iterator().next() : Contract.DEFAULT_PIPELINE;
        List<String> members = pipelines.get(chosen);
        if (members == null) {
            throw new ArtifactException("the artifact has no pipeline '" + chosen + "' (it has "
                    + String.join(", ", pipelines.keySet()) + "): re-export it");
        }
        List<Manifest.Chunk> out = new ArrayList<>();
        for (String member : members) {
            Manifest.Chunk chunk = chunks().stream().filter(c -> c.name().equals(member)).findFirst().orElseThrow(
                    () -> new ArtifactException("pipeline '" + chosen + "' names chunk '" + member
                            + "', which the artifact lacks: re-export it"));
            out.add(chunk);
        }
        return out;
    }

    /** The first file of {@code chunk} with {@code role}, or null. */
    public Path file(Manifest.Chunk chunk, String role) {
        return chunk.files().stream().filter(f -> f.role().equals(role)).findFirst()
                .map(f -> root.resolve(f.path())).orElse(null);
    }

    /** A top-level data file ({@code files}) by role, e.g. {@code embedding} or {@code tokenizer}. */
    public Path dataFile(String role) throws ArtifactException {
        return manifest.files().stream().filter(f -> f.role().equals(role)).findFirst()
                .map(f -> root.resolve(f.path()))
                .orElseThrow(() -> new ArtifactException("the artifact lists no " + role + " file: re-export it"));
    }

    /**
     * The inputs and outputs of {@code function} of a chunk: the function entry's own when it lists them (a language
     * model's {@code prefill_<n>} / {@code decode}), else the chunk's (null: the chunk's, which are its first
     * function's).
     */
    public IO io(Manifest.Chunk chunk, String function) {
        Manifest.FunctionEntry entry = chunk.functions() == null || function == null ? null : chunk.functions().get(function);
        return new IO(entry != null && entry.inputs() != null ? entry.inputs() : chunk.inputs(),
                entry != null && entry.outputs() != null ? entry.outputs() : chunk.outputs());
    }

    /**
     * The program file and method that run {@code function} of a chunk. A chunk with {@code functions} maps each to
     * its file and method (null picks its first); a chunk without has one program, used whatever function is asked,
     * with method {@code forward}.
     */
    public Program program(Manifest.Chunk chunk, String function) throws ArtifactException {
        Map<String, Manifest.FunctionEntry> functions = chunk.functions();
        if (functions == null || functions.isEmpty()) {
            Path path = file(chunk, Contract.PROGRAM);
            if (path == null) {
                throw new ArtifactException("chunk '" + chunk.name() + "' lists no program file: re-export the artifact");
            }
            return new Program(path, Contract.DEFAULT_METHOD);
        }
        String chosen = function != null ? function : functions.keySet().iterator().next();
        Manifest.FunctionEntry entry = functions.get(chosen);
        if (entry == null) {
            throw new ArtifactException("chunk '" + chunk.name() + "' has no function '" + chosen + "' (it has "
                    + String.join(", ", functions.keySet()) + "): re-export the artifact with that variant");
        }
        return new Program(root.resolve(entry.file()), entry.method() != null ? entry.method() : Contract.DEFAULT_METHOD);
    }
}
