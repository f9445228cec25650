package dev.edgetrim.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

/** Every manifest in apps/conformance decodes, with its pipelines (in order), functions and sections. */
public class ManifestTest {
    private static final List<String> KINDS = List.of("vlm", "language-model", "video-denoiser", "text-encoder");
    private static final Path ROOT = Paths.get("/artifact");

    private static Manifest manifest(String kind) throws Exception {
        return Manifest.parse(Vectors.bytes("manifests/" + kind + ".json"), kind + ".json");
    }

    @Test
    public void everyManifestDecodesItsChunksAndFilesAsWritten() throws Exception {
        for (String kind : KINDS) {
            Manifest manifest = manifest(kind);
            JSONObject raw = Vectors.json("manifests/" + kind + ".json");
            assertEquals(kind, manifest.kind());
            assertEquals(Contract.SCHEMA_VERSION, manifest.schemaVersion());
            assertEquals(raw.getString("target"), manifest.target());
            assertTrue(Contract.TARGETS.contains(manifest.target()));
            assertTrue(manifest.source().randomWeights());
            JSONArray chunks = raw.getJSONArray("chunks");
            assertEquals(chunks.length(), manifest.chunks().size());
            for (int i = 0; i < chunks.length(); i++) {
                Manifest.Chunk chunk = manifest.chunks().get(i);
                JSONObject rawChunk = chunks.getJSONObject(i);
                assertEquals(rawChunk.getString("name"), chunk.name());
                JSONArray files = rawChunk.getJSONArray("files");
                assertEquals(files.length(), chunk.files().size());
                for (int f = 0; f < files.length(); f++) {
                    JSONObject file = files.getJSONObject(f);
                    Manifest.FileEntry entry = chunk.files().get(f);
                    assertEquals(file.getString("path"), entry.path());
                    assertEquals(file.getLong("bytes"), entry.bytes());
                    assertEquals(file.getString("sha256"), entry.sha256());
                    assertEquals(file.getString("role"), entry.role());
                }
                JSONArray inputs = rawChunk.getJSONArray("inputs");
                assertEquals(inputs.length(), chunk.inputs().size());
                for (int t = 0; t < inputs.length(); t++) {
                    assertEquals(inputs.getJSONObject(t).getString("name"), chunk.inputs().get(t).name());
                    assertEquals(ints(inputs.getJSONObject(t).getJSONArray("shape")), chunk.inputs().get(t).shape());
                    assertEquals(inputs.getJSONObject(t).getString("dtype"), chunk.inputs().get(t).dtype());
                }
                assertEquals(rawChunk.getJSONArray("outputs").length(), chunk.outputs().size());
            }
            JSONArray files = raw.optJSONArray("files");
            List<String> roles = new ArrayList<>();
            for (int f = 0; files != null && f < files.length(); f++) roles.add(files.getJSONObject(f).getString("role"));
            List<String> mine = new ArrayList<>();
            for (Manifest.FileEntry entry : manifest.files()) mine.add(entry.role());
            assertEquals(roles, mine);
        }
    }

    @Test
    public void pipelinesInOrder() throws Exception {
        Map<String, List<String>> expected = Map.of(
                "vlm", List.of(Contract.VISION, Contract.PREFILL, Contract.DECODE),
                "language-model", List.of(Contract.PREFILL, Contract.DECODE),
                "video-denoiser", List.of(Contract.CAPTION, Contract.DENOISER),
                "text-encoder", List.of(Contract.TEXT));
        for (String kind : KINDS) {
            Artifact artifact = new Artifact(ROOT, manifest(kind));
            assertEquals(kind, expected.get(kind), new ArrayList<>(artifact.pipelines().keySet()));
            JSONObject raw = Vectors.json("manifests/" + kind + ".json").getJSONObject("pipelines");
            for (Map.Entry<String, List<String>> pipeline : artifact.pipelines().entrySet()) {
                assertEquals(strings(raw.getJSONArray(pipeline.getKey())), pipeline.getValue());
                assertEquals(pipeline.getValue(), names(artifact.pipeline(pipeline.getKey())));
            }
            ArtifactException error = assertThrows(ArtifactException.class, () -> artifact.pipeline("nope"));
            assertTrue(error.getMessage(), error.getMessage().contains("has no pipeline 'nope'"));
        }
    }

    @Test
    public void defaultPipelineIsTheOnlyOneOrMain() throws Exception {
        Manifest text = manifest("text-encoder");
        assertEquals(List.of("embed", "block_00", "block_01", "final"), names(new Artifact(ROOT, text).pipeline(null)));
        JSONObject raw = Vectors.json("manifests/text-encoder.json");
        raw.remove("pipelines");
        Artifact main = new Artifact(ROOT, Manifest.parse(raw.toString().getBytes(StandardCharsets.UTF_8), "m"));
        assertEquals(List.of(Contract.DEFAULT_PIPELINE), new ArrayList<>(main.pipelines().keySet()));
        assertEquals(names(text.chunks()), names(main.pipeline(null)));
        Artifact vlm = new Artifact(ROOT, manifest("vlm"));
        assertThrows(ArtifactException.class, () -> vlm.pipeline(null));
    }

    @Test
    public void videoDepthChunksHoldPlainAndTdtm() throws Exception {
        Manifest video = manifest("video-denoiser");
        Artifact artifact = new Artifact(ROOT, video);
        int depth = 0;
        for (Manifest.Chunk chunk : video.chunks()) {
            if (!chunk.name().startsWith("depth_")) continue;
            depth++;
            assertEquals(List.of(Contract.PLAIN, Contract.TDTM), new ArrayList<>(chunk.functions().keySet()));
            String file = chunk.files().get(0).path();
            for (String function : chunk.functions().keySet()) {
                Artifact.Program program = artifact.program(chunk, function);
                assertEquals(ROOT.resolve(file), program.path());
                assertEquals(Contract.methodName(function), program.method());
            }
            assertEquals(Contract.methodName(Contract.PLAIN), artifact.program(chunk, null).method());
            ArtifactException error = assertThrows(ArtifactException.class, () -> artifact.program(chunk, "fast"));
            assertTrue(error.getMessage(), error.getMessage().contains("has no function 'fast' (it has plain, tdtm)"));
        }
        assertEquals(video.video().depth(), Integer.valueOf(depth));
        Manifest.Chunk caption = video.chunks().get(0);
        Artifact.Program program = artifact.program(caption, Contract.TDTM);
        assertEquals(ROOT.resolve("00-caption.mlpackage"), program.path());
        assertEquals(Contract.DEFAULT_METHOD, program.method());
        assertEquals(ROOT.resolve("null_caption.npy"), artifact.dataFile(Contract.NULL_CAPTION));
        assertThrows(ArtifactException.class, () -> artifact.dataFile(Contract.TOKENIZER));
    }

    private static List<Manifest.TensorSpec> specs(JSONArray raw) throws Exception {
        List<Manifest.TensorSpec> out = new ArrayList<>();
        for (int i = 0; i < raw.length(); i++) {
            JSONObject spec = raw.getJSONObject(i);
            out.add(new Manifest.TensorSpec(spec.getString("name"), ints(spec.getJSONArray("shape")), spec.getString("dtype")));
        }
        return out;
    }

    /**
     * vlm and language-model: every chunk of the prefill and decode pipelines (the same chunks) holds {@code prefill_<n>}
     * for each prefill length, then {@code decode}, each with its own inputs and outputs as written.
     */
    @Test
    public void languageModelChunksHoldAPrefillFunctionPerLengthAndDecode() throws Exception {
        for (String kind : List.of("vlm", "language-model")) {
            Manifest manifest = manifest(kind);
            JSONObject raw = Vectors.json("manifests/" + kind + ".json");
            Artifact artifact = new Artifact(ROOT, manifest);
            Manifest.LLM llm = manifest.llm();
            List<Integer> lengths = llm.prefillLengths();
            assertEquals(kind, ints(raw.getJSONObject("llm").getJSONArray("prefill_lengths")), lengths);
            assertEquals(kind, lengths.stream().sorted().collect(Collectors.toList()), lengths);
            assertTrue(kind, lengths.size() > 1);
            assertEquals(kind, llm.prefillLength(), (int) lengths.get(lengths.size() - 1));
            assertEquals(artifact.pipelines().get(Contract.DECODE), names(artifact.pipeline(Contract.PREFILL)));
            List<String> functions = new ArrayList<>();
            for (int length : lengths) functions.add(Contract.prefillFunction(length));
            functions.add(Contract.DECODE);
            JSONArray rawChunks = raw.getJSONArray("chunks");
            for (Manifest.Chunk chunk : artifact.pipeline(Contract.PREFILL)) {
                assertEquals(chunk.name(), functions, new ArrayList<>(chunk.functions().keySet()));
                JSONObject rawFunctions = null;
                for (int i = 0; i < rawChunks.length(); i++) {
                    if (rawChunks.getJSONObject(i).getString("name").equals(chunk.name())) {
                        rawFunctions = rawChunks.getJSONObject(i).getJSONObject("functions");
                    }
                }
                assertNotNull(chunk.name(), rawFunctions);
                for (String function : functions) {
                    JSONObject rawEntry = rawFunctions.getJSONObject(function);
                    Artifact.IO io = artifact.io(chunk, function);
                    assertEquals(chunk.name() + "." + function, specs(rawEntry.getJSONArray("inputs")), io.inputs());
                    assertEquals(chunk.name() + "." + function, specs(rawEntry.getJSONArray("outputs")), io.outputs());
                    Artifact.Program program = artifact.program(chunk, function);
                    assertEquals(ROOT.resolve(rawEntry.getString("file")), program.path());
                    if (manifest.target().equals(Contract.EXECUTORCH)) {
                        assertEquals(Contract.methodName(function), program.method());
                    }
                }
                Artifact.IO first = artifact.io(chunk, functions.get(0));
                assertEquals("null: the chunk's, its first function's", first, artifact.io(chunk, null));
                assertEquals(first, new Artifact.IO(chunk.inputs(), chunk.outputs()));
                assertEquals("unknown: the chunk's", first, artifact.io(chunk, "prefill_48"));
            }
            Manifest.Chunk embedder = artifact.pipeline(Contract.PREFILL).get(0);
            int width = llm.hiddenSize();
            for (int length : lengths) {
                Manifest.TensorSpec embeds = artifact.io(embedder, Contract.prefillFunction(length)).inputs().get(0);
                assertEquals(Contract.INPUTS_EMBEDS, embeds.name());
                assertEquals(List.of(1, length, width), embeds.shape());
            }
            List<Manifest.TensorSpec> decode = artifact.io(embedder, Contract.DECODE).inputs();
            assertEquals(List.of(Contract.INPUTS_EMBEDS, Contract.POSITION, Contract.pastNames(0).get(0)),
                    decode.subList(0, 3).stream().map(Manifest.TensorSpec::name).collect(Collectors.toList()));
            assertEquals(List.of(1, 1, width), decode.get(0).shape());
        }
        assertNull("the vision encoder has one program", manifest("vlm").chunks().get(0).functions());
    }

    /**
     * language-model-coreml, the KV cache as Core ML model state: the layer chunks list key_cache_XX / value_cache_XX
     * [1, KV, L, hd] float16 of their layers, no function passes past / present tensors, lm_head keeps no state;
     * {@code kv_cache} is io in the other language models and when absent.
     */
    @Test
    public void statefulLanguageModelListsItsCachesAsStates() throws Exception {
        Manifest manifest = manifest("language-model-coreml");
        JSONObject raw = Vectors.json("manifests/language-model-coreml.json");
        Manifest.LLM llm = manifest.llm();
        assertEquals(List.of(Contract.LANGUAGE_MODEL, Contract.COREML, Contract.KV_STATE),
                List.of(manifest.kind(), manifest.target(), llm.kvCache()));
        List<Manifest.TensorSpec> caches = new ArrayList<>();
        for (int layer = 0; layer < llm.numLayers(); layer++) {
            for (String name : Contract.cacheNames(layer)) {
                caches.add(new Manifest.TensorSpec(
                        name, List.of(1, llm.numKVHeads(), llm.maxLength(), llm.headDim()), "float16"));
            }
        }
        Artifact artifact = new Artifact(ROOT, manifest);
        List<Manifest.TensorSpec> states = new ArrayList<>();
        JSONArray rawChunks = raw.getJSONArray("chunks");
        for (int i = 0; i < rawChunks.length(); i++) {
            Manifest.Chunk chunk = manifest.chunks().get(i);
            JSONArray rawStates = rawChunks.getJSONObject(i).optJSONArray("states");
            assertEquals(chunk.name(), rawStates == null ? null : specs(rawStates), chunk.states());
            if (chunk.states() != null) states.addAll(chunk.states());
            for (String function : chunk.functions().keySet()) {
                Artifact.IO io = artifact.io(chunk, function);
                for (List<Manifest.TensorSpec> specs : List.of(io.inputs(), io.outputs())) {
                    for (Manifest.TensorSpec spec : specs) {
                        assertTrue(spec.name(), !spec.name().matches("(past|present)_.*"));
                    }
                }
            }
        }
        assertEquals(caches, states);
        Manifest.Chunk layers = artifact.pipeline(Contract.DECODE).get(0);
        assertEquals(List.of(Contract.INPUTS_EMBEDS, Contract.POSITION),
                artifact.io(layers, Contract.DECODE).inputs().stream().map(Manifest.TensorSpec::name)
                        .collect(Collectors.toList()));
        assertNull("lm_head keeps no state", manifest.chunks().get(manifest.chunks().size() - 1).states());
        assertEquals(Contract.KV_IO, manifest("language-model").llm().kvCache());
        assertEquals(Contract.KV_IO, manifest("vlm").llm().kvCache());
        raw.getJSONObject("llm").remove("kv_cache");
        Manifest older = Manifest.parse(raw.toString().getBytes(StandardCharsets.UTF_8), "m");
        assertEquals(Contract.KV_IO, older.llm().kvCache());
    }

    @Test
    public void prefillLengthsDefaultToThePrefillLength() throws Exception {
        JSONObject raw = Vectors.json("manifests/language-model.json");
        raw.getJSONObject("llm").remove("prefill_lengths");
        Manifest.LLM llm = Manifest.parse(raw.toString().getBytes(StandardCharsets.UTF_8), "m").llm();
        assertEquals(List.of(llm.prefillLength()), llm.prefillLengths());
    }

    @Test
    public void kindSections() throws Exception {
        Manifest vlm = manifest("vlm");
        assertEquals(2, vlm.llm().numLayers());
        assertTrue(vlm.llm().template().contains(Contract.IMAGE_TOKEN));
        assertTrue(vlm.llm().template().contains(Contract.PROMPT_FIELD));
        assertNotNull(vlm.llm().imageTokenID());
        assertEquals(List.of(2, 2), vlm.preprocessing().grid());
        assertEquals(3, vlm.preprocessing().mean().size());
        assertEquals("hired", vlm.reduction().method());
        assertEquals(Contract.TOKENS, vlm.outputs().keySet().iterator().next());
        assertEquals("tiny-vlm", vlm.exportOptions().model());

        Manifest language = manifest("language-model");
        assertNull(language.llm().template());
        assertTrue(language.llm().maxLength() > language.llm().prefillLength());
        assertNull(language.reduction());

        Manifest.Video section = manifest("video-denoiser").video();
        assertEquals(5, section.latentShape().size());
        assertEquals(section.batch(), (int) section.latentShape().get(0));
        assertEquals(List.of(Contract.PLAIN, Contract.TDTM), section.variants());
        assertEquals(List.of(Contract.PLAIN, Contract.TDTM), new ArrayList<>(section.flops().keySet()));
        assertEquals(Contract.NULL_CAPTION, section.nullCaption());
        assertTrue(section.scheduler().baseResolution() > 0);

        Manifest text = manifest("text-encoder");
        assertEquals(Contract.TOKENIZER, text.textEncoder().tokenizer());
        List<Integer> shape = text.chunks().get(0).inputs().get(0).shape();
        assertEquals((int) shape.get(shape.size() - 1), text.textEncoder().maxLength());
    }

    @Test
    public void notJsonOrNotAManifestIsRefusedAsManifest() {
        for (String bad : new String[] {"{not json", "[1,]", "\"a", "{\"a\" 1}", "{} 2", "", "[]", "{\"kind\": \"vlm\"}"}) {
            VerificationException error = assertThrows(bad, VerificationException.class,
                    () -> Manifest.parse(bad.getBytes(StandardCharsets.UTF_8), "m.json"));
            assertEquals(bad, VerificationException.Reason.MANIFEST, error.reason());
        }
        VerificationException binary = assertThrows(VerificationException.class,
                () -> Manifest.parse(new byte[] {'"', (byte) 0xFF, '"'}, "m.json"));
        assertEquals(VerificationException.Reason.MANIFEST, binary.reason());
    }

    static List<Integer> ints(JSONArray array) throws Exception {
        List<Integer> out = new ArrayList<>();
        for (int i = 0; i < array.length(); i++) out.add(array.getInt(i));
        return out;
    }

    static List<String> strings(JSONArray array) throws Exception {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < array.length(); i++) out.add(array.getString(i));
        return out;
    }

    static List<String> names(List<Manifest.Chunk> chunks) {
        List<String> out = new ArrayList<>();
        for (Manifest.Chunk chunk : chunks) out.add(chunk.name());
        return out;
    }
}
