package dev.edgetrim.core;

import dev.edgetrim.core.VerificationException.Reason;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.json.JSONTokener;

/**
 * {@code manifest.json} of an artifact, every kind ({@link Contract#KINDS}). Unknown keys are ignored.
 *
 * <p>{@code chunks} lists every program (unique names); {@code pipelines} names the ordered chunk lists the runtime
 * runs (null: one pipeline, {@code main}, all chunks in order); {@code files} lists data of no chunk (embedding table,
 * tokenizer, null caption). The kind sections ({@code reduction}, {@code llm}, {@code video}, ...) are non-null for
 * the kinds that use them; boxed fields are null when absent. Read one with {@link #parse(byte[], String)} (or
 * {@link Artifact#read}), which checks it as the Python runtime does; maps keep the file's key order.
 */
public record Manifest(
        int schemaVersion, String edgetrimVersion, String created, String kind, String target, String precision,
        Source source, List<Chunk> chunks, Map<String, List<String>> pipelines, List<FileEntry> files,
        Reduction reduction, Preprocessing preprocessing, Map<String, String> outputs, LLM llm, Video video,
        TextEncoder textEncoder, ExportOptions exportOptions) {

    /**
     * Bytes a chunk's programs read: its own files, and for the head tied to the embedding table
     * ({@code llm.embedding_tied}) the table and its scales, which its graphs read as their weight (Python's
     * {@code Artifact.weight_bytes}). What the memory planner budgets.
     */
    public long weightBytes(Chunk chunk) {
        long total = chunk.bytes();
        if (llm == null || !chunk.name().equals(llm.embeddingTied())) return total;
        for (FileEntry file : files) {
            if (file.role().equals(Contract.EMBEDDING) || file.role().equals(Contract.EMBEDDING_SCALES)) {
                total += file.bytes();
            }
        }
        return total;
    }

    /** Where the model came from (for a vlm, the vision tower's origin); {@code tokenDim} is D of {@code tokens}. */
    public record Source(String kind, String name, String architecture, boolean randomWeights, Boolean hasProjector,
            Integer tokenDim) {}

    /**
     * One program: the files it needs and the tensors it takes and returns (passed between chunks by name).
     * {@code functions} (null: one program, role {@code program}) maps each function sharing the weights to its file;
     * {@code states} (null: stateless) is the Core ML model state every function reads and writes in place (a stateful
     * language model's KV cache, {@link Contract#cacheNames}).
     */
    public record Chunk(String name, List<FileEntry> files, List<TensorSpec> inputs, List<TensorSpec> outputs,
            Map<String, FunctionEntry> functions, String optimized, String quantization, List<TensorSpec> states) {
        /** Bytes of all its files: what the memory planner budgets. */
        public long bytes() {
            long total = 0;
            for (FileEntry file : files) total += file.bytes();
            return total;
        }
    }

    /**
     * A file (or a folder such as an .mlpackage) relative to the artifact folder: POSIX path, never absolute, never
     * {@code ..}; role {@code program}, {@code external_data}, {@code program_<function>} or a data role; bytes (a
     * folder: the sum of its files'); lowercase hex sha256 (a folder: by the folder rule, see {@link Verification}).
     */
    public record FileEntry(String path, String role, long bytes, String sha256) {}

    /** A program input or output: static shape, dtype float32 / float16 / int32 / int64. */
    public record TensorSpec(String name, List<Integer> shape, String dtype) {}

    /**
     * One function of a multi-function chunk: its program file, the method inside it (null: {@code forward}), and its
     * own inputs / outputs when they differ from the chunk's (null: the chunk's; a language model's
     * {@code prefill_<n>} / {@code decode}; see {@link Artifact#io}).
     */
    public record FunctionEntry(String file, String method, List<TensorSpec> inputs, List<TensorSpec> outputs) {}

    /** The token reduction baked into a vision graph: K ({@code tokens}) of the {@code availableTokens} P * N. */
    public record Reduction(String method, String requestedBudget, int tokens, int availableTokens, double keptFraction) {}

    /** How an image becomes {@code pixel_values} [1, P, 3, S, S]: S = imageSize, grid [rows, cols], per-channel mean / std. */
    public record Preprocessing(int imageSize, Integer patchSize, int patchesPerSide, List<Integer> grid,
            Integer partitions, List<Double> mean, List<Double> std) {}

    /**
     * The language model of a vlm / language-model artifact: KV slots {@code maxLength} (prompt + generated tokens must
     * fit), the longest static prefill length P and every exported one ({@code prefillLengths}, ascending, the last P,
     * one {@link Contract#prefillFunction} each; absent in older artifacts: [P]), where the KV cache lives
     * ({@code kvCache}: {@link Contract#KV_STATE}, the chunks' Core ML state, or {@link Contract#KV_IO}, past / present
     * tensors; absent in older artifacts: io), and for a vlm the prompt template, image token id and visual token
     * count K.
     */
    public record LLM(Integer hiddenSize, int numLayers, Integer numHeads, Integer numKVHeads, Integer headDim,
            Integer vocabSize, int maxLength, int prefillLength, List<Integer> prefillLengths, String embeddingDtype,
            String embeddingTied, String kvCache, Integer visualTokens, String template, Integer imageTokenID, List<Integer> eosTokenIDs) {}

    /**
     * STDiT3 denoiser geometry and sampler defaults: latent [B, C_in, T, H, W]; batch 2 runs CFG's halves in one call;
     * pixel size [height, width] and frames drive the timestep shift; {@code flops} of one depth step per function.
     */
    public record Video(List<Integer> latentShape, int batch, int inChannels, Integer outChannels, Integer frames,
            Integer tokensPerFrame, List<Integer> pixelSize, int pixelFrames, int captionLength, int captionChannels,
            Integer depth, List<String> variants, String nullCaption, Map<String, Long> flops, Scheduler scheduler) {}

    /** Rectified-flow defaults (Open-Sora 1.2). */
    public record Scheduler(Integer numSteps, double cfgScale, int baseResolution, Integer mergeSteps, Integer leapAt) {}

    /** A chunked T5 caption encoder: L = maxLength token ids per caption; {@code tokenizer} is the file's role. */
    public record TextEncoder(int maxLength, Integer hiddenSize, int vocabSize, String tokenizer) {}

    /** What the artifact was exported with. */
    public record ExportOptions(String model, String target, Integer chunks) {}

    /** Artifact kind -> the top-level keys the runtime reads (Python's {@code REQUIRED_KEYS}). */
    public static final Map<String, List<String>> REQUIRED_KEYS = Map.of(
            Contract.VISION_ENCODER, List.of("target", "chunks", "preprocessing", "reduction", "source"),
            Contract.VLM, List.of("target", "chunks", "pipelines", "preprocessing", "reduction", "source", "llm", "files"),
            Contract.LANGUAGE_MODEL, List.of("target", "chunks", "pipelines", "source", "llm", "files"),
            Contract.VIDEO_DENOISER, List.of("target", "chunks", "pipelines", "source", "video"),
            Contract.TEXT_ENCODER, List.of("target", "chunks", "source", "text_encoder"),
            Contract.VIDEO_DECODER, List.of("target", "chunks", "pipelines", "source", "decoder"));

    private static final String DAMAGED = "the manifest is damaged, re-export the artifact";

    /**
     * Parses and checks manifest JSON (UTF-8) as Python's {@code read_manifest} does, then reads it (a field of the
     * wrong type is refused as {@code manifest} too). {@code path} names the file in messages.
     */
    public static Manifest parse(byte[] data, String path) throws VerificationException {
        JSONObject json;
        try {
            String text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(data)).toString();
            JSONTokener tokener = new JSONTokener(text);
            Object value = tokener.nextValue();
            if (tokener.nextClean() != '\0') throw new JSONException("extra data after the value");
            if (!(value instanceof JSONObject object) || !object.has("schema_version")) {
                throw new VerificationException(Reason.MANIFEST,
                        path + " is not an edgetrim manifest (no schema_version): re-export the artifact");
            }
            json = object;
        } catch (JSONException | CharacterCodingException e) {
            throw new VerificationException(Reason.MANIFEST,
                    path + " is not valid JSON (" + e.getMessage() + "): re-export the artifact");
        }
        Object version = json.opt("schema_version");
        if (!(version instanceof Integer || version instanceof Long) || ((Number) version).longValue() < 1) {
            throw new VerificationException(Reason.MANIFEST,
                    path + " has schema version " + version + ", not a version number: re-export the artifact");
        }
        if (((Number) version).longValue() > Contract.SCHEMA_VERSION) {
            throw new VerificationException(Reason.SCHEMA_VERSION, path + " has schema version " + version
                    + ", newer than this runtime's " + Contract.SCHEMA_VERSION + ": upgrade edgetrim");
        }
        Object kind = json.has("kind") ? json.opt("kind") : Contract.VISION_ENCODER;
        List<String> required = kind instanceof String name ? REQUIRED_KEYS.get(name) : null;
        if (required == null) {
            throw new VerificationException(Reason.MANIFEST,
                    path + " describes a '" + kind + "' artifact, which this runtime does not know: upgrade edgetrim");
        }
        for (String key : required) {
            if (!json.has(key)) throw new VerificationException(Reason.MANIFEST, path + " lacks '" + key + "': " + DAMAGED);
        }
        checkChunks(path, json.opt("chunks"));
        checkPipelines(path, json);
        checkFileEntries(path, "the artifact", json.has("files") ? json.opt("files") : new JSONArray());
        checkEmbedding(path, json);
        try {
            return read(new Node(json, ""));
        } catch (Malformed e) {
            throw new VerificationException(Reason.MANIFEST, path + " " + e.getMessage() + ": " + DAMAGED);
        }
    }

    /**
     * An int8 / int8_block embedding table lists its scales ({@code embedding_scales}); a table tied to the LM head
     * ({@code llm.embedding_tied}, int8_block and only it) names one of the artifact's chunks.
     */
    private static void checkEmbedding(String path, JSONObject manifest) throws VerificationException {
        JSONObject llm = manifest.optJSONObject("llm");
        if (llm == null) return;
        Object dtype = llm.opt("embedding_dtype");
        boolean block = Contract.EMBEDDING_INT8_BLOCK.equals(dtype);
        if (Contract.EMBEDDING_INT8.equals(dtype) || block) {
            JSONArray files = manifest.optJSONArray("files");
            boolean listed = false;
            for (int i = 0; files != null && i < files.length(); i++) {
                JSONObject file = files.optJSONObject(i);
                listed |= file != null && Contract.EMBEDDING_SCALES.equals(file.opt("role"));
            }
            if (!listed) {
                throw new VerificationException(Reason.MANIFEST, path + ": llm.embedding_dtype is " + dtype
                        + " but the artifact lists no " + Contract.EMBEDDING_SCALES + " file (the table's "
                        + (block ? "block" : "per-row") + " scales): " + DAMAGED);
            }
        }
        boolean tied = llm.has("embedding_tied");
        if (block != tied) {
            throw new VerificationException(Reason.MANIFEST, path + ": llm.embedding_dtype is " + dtype
                    + (tied ? " with" : " without") + " llm.embedding_tied: a tied table is int8_block and names its"
                    + " head chunk, and only it: " + DAMAGED);
        }
        if (!tied) return;
        Object chunk = llm.opt("embedding_tied");
        JSONArray chunks = manifest.optJSONArray("chunks");
        for (int i = 0; chunks != null && i < chunks.length(); i++) {
            JSONObject entry = chunks.optJSONObject(i);
            if (entry != null && chunk instanceof String && chunk.equals(entry.opt("name"))) return;
        }
        throw new VerificationException(Reason.MANIFEST, path + ": llm.embedding_tied names no chunk of the artifact ("
                + chunk + "): " + DAMAGED);
    }

    /** The chunk and file entries the runtime indexes into: present, typed, inside the folder, names unique. */
    private static void checkChunks(String path, Object chunks) throws VerificationException {
        if (!(chunks instanceof JSONArray list) || list.length() == 0) {
            throw new VerificationException(Reason.MANIFEST, path + " lists no chunks: re-export the artifact");
        }
        Set<Object> seen = new HashSet<>();
        for (int i = 0; i < list.length(); i++) {
            if (!(list.opt(i) instanceof JSONObject chunk) || !chunk.has("name") || !chunk.has("files")
                    || !chunk.has("inputs") || !chunk.has("outputs")) {
                throw new VerificationException(Reason.MANIFEST,
                        path + ": chunk " + i + " lacks name, files, inputs or outputs: " + DAMAGED);
            }
            Object name = chunk.opt("name");
            if (!seen.add(name)) {
                throw new VerificationException(Reason.MANIFEST, path + ": two chunks are named '" + name + "': " + DAMAGED);
            }
            if (!(chunk.opt("files") instanceof JSONArray files) || files.length() == 0) {
                throw new VerificationException(Reason.MANIFEST, path + ": chunk '" + name + "' lists no files: " + DAMAGED);
            }
            checkFileEntries(path, "chunk '" + name + "'", files);
            Set<Object> listed = new HashSet<>();
            boolean program = false;
            for (int f = 0; f < files.length(); f++) {
                JSONObject entry = files.optJSONObject(f);
                listed.add(entry.opt("path"));
                program |= Contract.PROGRAM.equals(entry.opt("role"));
            }
            if (!program) {
                throw new VerificationException(Reason.MANIFEST,
                        path + ": chunk '" + name + "' lists no program file: " + DAMAGED);
            }
            Object functions = chunk.isNull("functions") ? new JSONObject() : chunk.opt("functions");
            boolean listedFiles = functions instanceof JSONObject;
            if (functions instanceof JSONObject map) {
                for (Iterator<String> keys = map.keys(); keys.hasNext(); ) {
                    JSONObject function = map.optJSONObject(keys.next());
                    listedFiles &= function != null && function.has("file") && listed.contains(function.opt("file"));
                }
            }
            if (!listedFiles) {
                throw new VerificationException(Reason.MANIFEST,
                        path + ": chunk '" + name + "' has a function whose file it does not list: " + DAMAGED);
            }
        }
    }

    /** Every pipeline is a non-empty list of existing chunk names. */
    private static void checkPipelines(String path, JSONObject manifest) throws VerificationException {
        if (manifest.isNull("pipelines")) return;
        Set<Object> names = new HashSet<>();
        JSONArray chunks = manifest.optJSONArray("chunks");
        for (int i = 0; i < chunks.length(); i++) names.add(chunks.optJSONObject(i).opt("name"));
        if (!(manifest.opt("pipelines") instanceof JSONObject pipelines) || pipelines.length() == 0) {
            throw new VerificationException(Reason.MANIFEST, path + ": pipelines must map names to chunk lists: " + DAMAGED);
        }
        for (Iterator<String> keys = pipelines.keys(); keys.hasNext(); ) {
            String pipeline = keys.next();
            JSONArray list = pipelines.optJSONArray(pipeline);
            boolean known = list != null && list.length() > 0;
            for (int i = 0; known && i < list.length(); i++) known = names.contains(list.opt(i));
            if (!known) {
                throw new VerificationException(Reason.MANIFEST,
                        path + ": pipeline '" + pipeline + "' names chunks the manifest does not list: " + DAMAGED);
            }
        }
    }

    /** File entries: typed, and relative paths inside the artifact folder (no {@code ..}, no backslash). */
    private static void checkFileEntries(String path, String owner, Object files) throws VerificationException {
        if (!(files instanceof JSONArray entries)) {
            throw new VerificationException(Reason.MANIFEST, path + ": " + owner + " has a files entry that is not a list: " + DAMAGED);
        }
        for (int i = 0; i < entries.length(); i++) {
            JSONObject entry = entries.optJSONObject(i);
            if (entry == null || !(entry.opt("path") instanceof String file) || !(entry.opt("role") instanceof String)
                    || !isInteger(entry.opt("bytes")) || !(entry.opt("sha256") instanceof String)) {
                throw new VerificationException(Reason.MANIFEST,
                        path + ": " + owner + " has a file entry without path, role, bytes or sha256: " + DAMAGED);
            }
            if (file.isEmpty() || file.startsWith("/") || List.of(file.split("/")).contains("..") || file.contains("\\")) {
                throw new VerificationException(Reason.OUTSIDE,
                        path + ": file '" + file + "' is outside the artifact folder: " + DAMAGED);
            }
        }
    }

    private static boolean isInteger(Object value) {
        return value instanceof Integer || value instanceof Long;
    }

    // Reading the checked JSON into records.

    private static Manifest read(Node m) throws Malformed {
        return new Manifest(m.get("schema_version").integer(), m.optString("edgetrim_version"), m.optString("created"),
                m.has("kind") ? m.get("kind").string() : Contract.VISION_ENCODER, m.get("target").string(),
                m.optString("precision"), readSource(m.get("source")), m.get("chunks").list(Manifest::readChunk),
                m.has("pipelines") ? m.get("pipelines").map(n -> n.list(Node::string)) : null,
                m.has("files") ? m.get("files").list(Manifest::readFile) : List.of(),
                m.has("reduction") ? readReduction(m.get("reduction")) : null,
                m.has("preprocessing") ? readPreprocessing(m.get("preprocessing")) : null,
                m.has("outputs") ? m.get("outputs").map(Node::string) : null,
                m.has("llm") ? readLLM(m.get("llm")) : null, m.has("video") ? readVideo(m.get("video")) : null,
                m.has("text_encoder") ? readTextEncoder(m.get("text_encoder")) : null,
                m.has("export_options") ? readExportOptions(m.get("export_options")) : null);
    }

    private static Source readSource(Node n) throws Malformed {
        return new Source(n.optString("kind"), n.get("name").string(), n.optString("architecture"),
                n.get("random_weights").bool(), n.has("has_projector") ? n.get("has_projector").bool() : null,
                n.optInt("token_dim"));
    }

    private static Chunk readChunk(Node n) throws Malformed {
        return new Chunk(n.get("name").string(), n.get("files").list(Manifest::readFile),
                n.get("inputs").list(Manifest::readSpec), n.get("outputs").list(Manifest::readSpec),
                n.has("functions") ? n.get("functions").map(Manifest::readFunction) : null,
                n.optString("optimized"), n.optString("quantization"),
                n.has("states") ? n.get("states").list(Manifest::readSpec) : null);
    }

    private static FunctionEntry readFunction(Node n) throws Malformed {
        return new FunctionEntry(n.get("file").string(), n.optString("method"),
                n.has("inputs") ? n.get("inputs").list(Manifest::readSpec) : null,
                n.has("outputs") ? n.get("outputs").list(Manifest::readSpec) : null);
    }

    private static FileEntry readFile(Node n) throws Malformed {
        return new FileEntry(n.get("path").string(), n.get("role").string(), n.get("bytes").longValue(),
                n.get("sha256").string());
    }

    private static TensorSpec readSpec(Node n) throws Malformed {
        return new TensorSpec(n.get("name").string(), n.get("shape").list(Node::integer), n.get("dtype").string());
    }

    private static Reduction readReduction(Node n) throws Malformed {
        return new Reduction(n.get("method").string(), n.get("requested_budget").string(), n.get("tokens").integer(),
                n.get("available_tokens").integer(), n.get("kept_fraction").number());
    }

    private static Preprocessing readPreprocessing(Node n) throws Malformed {
        return new Preprocessing(n.get("image_size").integer(), n.optInt("patch_size"),
                n.get("patches_per_side").integer(), n.get("grid").list(Node::integer), n.optInt("partitions"),
                n.get("mean").list(Node::number), n.get("std").list(Node::number));
    }

    private static LLM readLLM(Node n) throws Malformed {
        int prefillLength = n.get("prefill_length").integer();
        return new LLM(n.optInt("hidden_size"), n.get("num_layers").integer(), n.optInt("num_heads"),
                n.optInt("num_kv_heads"), n.optInt("head_dim"), n.optInt("vocab_size"), n.get("max_length").integer(),
                prefillLength, n.has("prefill_lengths") ? n.get("prefill_lengths").list(Node::integer) : List.of(prefillLength),
                n.optString("embedding_dtype"), n.optString("embedding_tied"), n.has("kv_cache") ? n.get("kv_cache").string() : Contract.KV_IO,
                n.optInt("visual_tokens"),
                n.optString("template"), n.optInt("image_token_id"),
                n.has("eos_token_ids") ? n.get("eos_token_ids").list(Node::integer) : null);
    }

    private static Video readVideo(Node n) throws Malformed {
        Node s = n.get("scheduler");
        Scheduler scheduler = new Scheduler(s.optInt("num_steps"), s.get("cfg_scale").number(),
                s.get("base_resolution").integer(), s.optInt("merge_steps"), s.optInt("leap_at"));
        return new Video(n.get("latent_shape").list(Node::integer), n.get("batch").integer(),
                n.get("in_channels").integer(), n.optInt("out_channels"), n.optInt("frames"),
                n.optInt("tokens_per_frame"), n.get("pixel_size").list(Node::integer), n.get("pixel_frames").integer(),
                n.get("caption_length").integer(), n.get("caption_channels").integer(), n.optInt("depth"),
                n.has("variants") ? n.get("variants").list(Node::string) : null, n.optString("null_caption"),
                n.has("flops") ? n.get("flops").map(Node::longValue) : null, scheduler);
    }

    private static TextEncoder readTextEncoder(Node n) throws Malformed {
        return new TextEncoder(n.get("max_length").integer(), n.optInt("hidden_size"), n.get("vocab_size").integer(),
                n.get("tokenizer").string());
    }

    private static ExportOptions readExportOptions(Node n) throws Malformed {
        return new ExportOptions(n.get("model").string(), n.get("target").string(), n.optInt("chunks"));
    }

    /** A value that is absent where required, or of the wrong type: "lacks 'x' in chunks[0]", "has a wrong value at a.b". */
    private static final class Malformed extends Exception {
        Malformed(String message) {
            super(message);
        }
    }

    private interface Reader<T> {
        T read(Node node) throws Malformed;
    }

    /** A JSON value and its dotted path; null members count as absent for the optional readers. */
    private record Node(Object value, String path) {
        boolean has(String key) {
            return value instanceof JSONObject object && !object.isNull(key);
        }

        Node get(String key) throws Malformed {
            JSONObject object = object();
            if (!object.has(key)) throw new Malformed("lacks '" + key + "'" + (path.isEmpty() ? "" : " in " + path));
            return new Node(object.opt(key), path.isEmpty() ? key : path + "." + key);
        }

        JSONObject object() throws Malformed {
            if (value instanceof JSONObject object) return object;
            throw wrong();
        }

        String string() throws Malformed {
            if (value instanceof String text) return text;
            throw wrong();
        }

        long longValue() throws Malformed {
            if (isInteger(value)) return ((Number) value).longValue();
            throw wrong();
        }

        int integer() throws Malformed {
            long number = longValue();
            if (number != (int) number) throw wrong();
            return (int) number;
        }

        double number() throws Malformed {
            if (value instanceof Number number) return number.doubleValue();
            throw wrong();
        }

        boolean bool() throws Malformed {
            if (value instanceof Boolean flag) return flag;
            throw wrong();
        }

        String optString(String key) throws Malformed {
            return has(key) ? get(key).string() : null;
        }

        Integer optInt(String key) throws Malformed {
            return has(key) ? get(key).integer() : null;
        }

        <T> List<T> list(Reader<T> reader) throws Malformed {
            if (!(value instanceof JSONArray array)) throw wrong();
            List<T> out = new ArrayList<>(array.length());
            for (int i = 0; i < array.length(); i++) out.add(reader.read(new Node(array.opt(i), path + "[" + i + "]")));
            return Collections.unmodifiableList(out);
        }

        /** An object's members in the file's order. */
        <T> Map<String, T> map(Reader<T> reader) throws Malformed {
            JSONObject object = object();
            Map<String, T> out = new LinkedHashMap<>();
            for (Iterator<String> keys = object.keys(); keys.hasNext(); ) {
                String key = keys.next();
                out.put(key, reader.read(new Node(object.opt(key), path.isEmpty() ? key : path + "." + key)));
            }
            return Collections.unmodifiableMap(out);
        }

        Malformed wrong() {
            return new Malformed("has a wrong value at " + path);
        }
    }
}
