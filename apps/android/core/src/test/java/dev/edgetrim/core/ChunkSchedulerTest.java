package dev.edgetrim.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

/** The prefetching chunk scheduler over a fake backend: data flow by name, residency, overlap, functions, errors. */
public class ChunkSchedulerTest {
    /**
     * A backend that records what the scheduler asks, sleeps a little, and computes each output as 1 + the sum of its
     * inputs (+ 100 for the tdtm function).
     */
    static final class FakeBackend implements ChunkBackend<ChunkProgram> {
        private final long loadMillis;
        private final long runMillis;
        private final Set<String> failing;
        private final List<String> log = Collections.synchronizedList(new ArrayList<>());
        private final List<Run> runs = Collections.synchronizedList(new ArrayList<>());
        private int loaded;
        private int mostLoaded;

        FakeBackend(long loadMillis, long runMillis, Set<String> failing) {
            this.loadMillis = loadMillis;
            this.runMillis = runMillis;
            this.failing = failing;
        }

        FakeBackend() {
            this(0, 0, Set.of());
        }

        /** "load a", "run b:tdtm", "unload c" in the order they happened. */
        List<String> log() {
            synchronized (log) {
                return new ArrayList<>(log);
            }
        }

        /** Each run's program and the names of the inputs it was given. */
        List<Run> runs() {
            synchronized (runs) {
                return new ArrayList<>(runs);
            }
        }

        synchronized int mostLoaded() {
            return mostLoaded;
        }

        private void record(String what, ChunkProgram program, int loading) {
            synchronized (this) {
                loaded += loading;
                mostLoaded = Math.max(mostLoaded, loaded);
                log.add(what + " " + program.chunk().name() + (program.function() != null ? ":" + program.function() : ""));
            }
        }

        @Override
        public ChunkProgram load(ChunkProgram program) throws Exception {
            Thread.sleep(loadMillis);
            if (failing.contains(program.chunk().name())) throw new IllegalStateException("Failure");
            record("load", program, 1);
            return program;
        }

        @Override
        public Map<String, Tensor> run(ChunkProgram handle, Map<String, Tensor> inputs) throws Exception {
            record("run", handle, 0);
            runs.add(new Run(handle, Set.copyOf(inputs.keySet())));
            Thread.sleep(runMillis);
            float total = 1;
            for (Tensor tensor : inputs.values()) for (float v : tensor.floats()) total += v;
            float value = total + (Contract.TDTM.equals(handle.function()) ? 100 : 0);
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (Manifest.TensorSpec spec : handle.outputs()) out.put(spec.name(), scalar(value));
            return out;
        }

        @Override
        public void unload(ChunkProgram handle) {
            record("unload", handle, -1);
        }

        long count(String entry) {
            return log().stream().filter(entry::equals).count();
        }
    }

    /** A run of the fake backend: the program and the names of its inputs. */
    record Run(ChunkProgram program, Set<String> inputs) {}

    /** One chunk: name, inputs, outputs, MB, functions; every tensor float32 [1]. */
    private record Spec(String name, List<String> inputs, List<String> outputs, int mb, List<String> functions) {}

    private static Spec spec(String name, List<String> inputs, List<String> outputs, int mb, String... functions) {
        return new Spec(name, inputs, outputs, mb, List.of(functions));
    }

    private static JSONObject manifest(List<Spec> chunks, String pipeline) throws Exception {
        JSONArray list = new JSONArray();
        JSONArray names = new JSONArray();
        for (Spec chunk : chunks) {
            names.put(chunk.name());
            JSONObject entry = new JSONObject().put("name", chunk.name()).put("inputs", specs(chunk.inputs()))
                    .put("outputs", specs(chunk.outputs())).put("files", new JSONArray().put(new JSONObject()
                            .put("path", chunk.name() + ".mlpackage").put("role", "program")
                            .put("bytes", (long) chunk.mb() << 20).put("sha256", "0")));
            if (!chunk.functions().isEmpty()) {
                JSONObject functions = new JSONObject();
                for (String function : chunk.functions()) {
                    functions.put(function, new JSONObject().put("file", chunk.name() + ".mlpackage")
                            .put("method", Contract.methodName(function)));
                }
                entry.put("functions", functions);
            }
            list.put(entry);
        }
        return new JSONObject().put("schema_version", 1).put("kind", Contract.LANGUAGE_MODEL)
                .put("target", Contract.COREML)
                .put("source", new JSONObject().put("name", "fake").put("random_weights", true))
                .put("llm", new JSONObject().put("num_layers", 1).put("max_length", 8).put("prefill_length", 4))
                .put("files", new JSONArray()).put("pipelines", new JSONObject().put(pipeline, names)).put("chunks", list);
    }

    private static JSONArray specs(List<String> names) throws Exception {
        JSONArray out = new JSONArray();
        for (String name : names) {
            out.put(new JSONObject().put("name", name).put("shape", new JSONArray().put(1)).put("dtype", "float32"));
        }
        return out;
    }

    private static Artifact artifact(JSONObject manifest) throws Exception {
        return new Artifact(Paths.get("/fake"), Manifest.parse(manifest.toString().getBytes(StandardCharsets.UTF_8), "m"));
    }

    /** a(x) -> h1; b(h1) -> h2, s; c(h2, s) -> y; d(y) -> z: 10 MB each. */
    private static JSONObject lineManifest() throws Exception {
        return manifest(List.of(spec("a", List.of("x"), List.of("h1"), 10), spec("b", List.of("h1"), List.of("h2", "s"), 10),
                spec("c", List.of("h2", "s"), List.of("y"), 10), spec("d", List.of("y"), List.of("z"), 10)), "main");
    }

    private static Artifact line() throws Exception {
        return artifact(lineManifest());
    }

    private static Tensor scalar(float value) {
        return Tensor.ofFloats(new int[] {1}, new float[] {value});
    }

    private static <H> ChunkScheduler<H> scheduler(Artifact artifact, ChunkBackend<H> backend, Double budgetMB)
            throws ArtifactException {
        return new ChunkScheduler<>(artifact, backend, null, budgetMB, true, null, null, null);
    }

    @Test
    public void outputsFlowByName() throws Exception {
        try (ChunkScheduler<ChunkProgram> scheduler = new ChunkScheduler<>(line(), new FakeBackend())) {
            assertEquals(List.of(0, 1, 2, 3), scheduler.plan().resident());
            assertEquals(List.of("x"), scheduler.inputNames());
            assertEquals(List.of("z"), scheduler.outputNames());
            // h1 = 3, h2 = s = 4, y = 9, z = 10
            assertEquals(Map.of("z", scalar(10)), scheduler.run(Map.of("x", scalar(2))));
            ArtifactException missing = assertThrows(ArtifactException.class, () -> scheduler.run(Map.of("h1", scalar(2))));
            assertTrue(missing.getMessage(), missing.getMessage().contains("missing input x for pipeline a/b/c/d"));
        }
        try (ChunkScheduler<ChunkProgram> partial = new ChunkScheduler<>(line(), new FakeBackend(), null, null, true,
                List.of("x"), List.of("s", "y"), null)) {
            Map<String, Tensor> out = partial.run(Map.of("x", scalar(2)));
            assertEquals(List.of("s", "y"), new ArrayList<>(out.keySet()));
            assertEquals(Map.of("s", scalar(4), "y", scalar(9)), out);
        }
    }

    @Test
    public void residentLoadOnceStreamedLoadEveryInvocationAndUnloadAfterRunning() throws Exception {
        FakeBackend backend = new FakeBackend(5, 5, Set.of());
        ChunkScheduler<ChunkProgram> scheduler = scheduler(line(), backend, 35.0);
        assertEquals(new MemoryPlan(List.of(0), List.of(1, 2, 3), true, 35L << 20), scheduler.plan());
        for (int i = 0; i < 3; i++) scheduler.run(Map.of("x", scalar(0)));
        List<String> log = backend.log();
        assertEquals(1, backend.count("load a"));
        for (String name : List.of("b", "c", "d")) {
            assertEquals(3, backend.count("run " + name));
            assertTrue(backend.count("load " + name) >= 3);
            // every run of a streamed chunk is followed by its unload before it runs again
            List<String> mine = log.stream().filter(e -> e.endsWith(" " + name) && !e.startsWith("load"))
                    .collect(Collectors.toList());
            assertEquals(Collections.nCopies(3, List.of("run " + name, "unload " + name)).stream()
                    .flatMap(List::stream).collect(Collectors.toList()), mine);
        }
        assertFalse(log.contains("unload a"));
        assertTrue("resident a + the running chunk + the one loading", backend.mostLoaded() <= 3);
        scheduler.close();
        waitUntilBalanced(backend);
        assertTrue(backend.log().contains("unload a"));
    }

    @Test
    public void theNextLoadOverlapsTheCurrentComputeAndWrapsToTheNextInvocation() throws Exception {
        FakeBackend backend = new FakeBackend(30, 50, Set.of());
        try (ChunkScheduler<ChunkProgram> scheduler = scheduler(line(), backend, 35.0)) {
            for (int i = 0; i < 2; i++) scheduler.run(Map.of("x", scalar(0)));
            List<ChunkTimeline.Event> events = scheduler.timeline().events();
            String[][] pairs = {{"b", "c", "0", "0"}, {"c", "d", "0", "0"}, {"d", "b", "0", "1"}, {"b", "c", "1", "1"}};
            for (String[] pair : pairs) {
                ChunkTimeline.Event compute = event(events, pair[0], ChunkTimeline.Kind.COMPUTE, Integer.parseInt(pair[2]));
                ChunkTimeline.Event load = event(events, pair[1], ChunkTimeline.Kind.LOAD, Integer.parseInt(pair[3]));
                assertTrue("load " + pair[1] + " starts while " + pair[0] + " computes", load.start() < compute.end());
                assertTrue("load " + pair[1] + " starts with " + pair[0], load.start() >= compute.start() - 0.01);
            }
        }
        FakeBackend serial = new FakeBackend(10, 10, Set.of());
        try (ChunkScheduler<ChunkProgram> oneSlot = scheduler(line(), serial, 15.0)) {
            assertEquals(new MemoryPlan(List.of(), List.of(0, 1, 2, 3), false, 15L << 20), oneSlot.plan());
            oneSlot.run(Map.of("x", scalar(0)));
            List<ChunkTimeline.Event> events = oneSlot.timeline().events();
            for (ChunkTimeline.Event compute : events) {
                if (compute.kind() != ChunkTimeline.Kind.COMPUTE) continue;
                for (ChunkTimeline.Event load : events) {
                    if (load.kind() != ChunkTimeline.Kind.LOAD) continue;
                    assertFalse("nothing loads during a compute", load.start() < compute.end() && compute.start() < load.end());
                }
            }
            assertEquals(1, serial.mostLoaded());
        }
    }

    private static ChunkTimeline.Event event(List<ChunkTimeline.Event> events, String chunk, ChunkTimeline.Kind kind,
            int invocation) {
        return events.stream().filter(e -> e.chunk().equals(chunk) && e.kind() == kind && e.invocation() == invocation)
                .findFirst().orElseThrow(() -> new AssertionError("no " + kind + " of " + chunk + " in run " + invocation));
    }

    @Test
    public void functionSelection() throws Exception {
        Artifact video = artifact(manifest(List.of(spec("embed", List.of("latent"), List.of("hidden_00"), 10),
                spec("depth_00", List.of("hidden_00"), List.of("hidden_01"), 10, Contract.PLAIN, Contract.TDTM),
                spec("depth_01", List.of("hidden_01"), List.of("hidden_02"), 10, Contract.PLAIN, Contract.TDTM),
                spec("final", List.of("hidden_02"), List.of("velocity"), 10)), Contract.DENOISER));
        FakeBackend backend = new FakeBackend();
        Map<String, Tensor> latent = Map.of("latent", scalar(0));
        ChunkScheduler<ChunkProgram> scheduler = scheduler(video, backend, 35.0);
        assertArrayEquals(new float[] {204}, scheduler.run(latent, Contract.TDTM).get("velocity").floats(), 0);
        assertArrayEquals(new float[] {204}, scheduler.run(latent, Contract.TDTM).get("velocity").floats(), 0);
        assertArrayEquals(new float[] {4}, scheduler.run(latent, Contract.PLAIN).get("velocity").floats(), 0);
        assertArrayEquals("null runs the first function", new float[] {4}, scheduler.run(latent).get("velocity").floats(), 0);
        assertEquals(List.of("run depth_00:tdtm", "run depth_00:tdtm", "run depth_00:plain", "run depth_00:plain"),
                backend.log().stream().filter(e -> e.startsWith("run depth_00")).collect(Collectors.toList()));
        assertTrue("a chunk without functions loads with none", backend.log().contains("run embed"));
        ArtifactException fast = assertThrows(ArtifactException.class, () -> scheduler.run(latent, "fast"));
        assertTrue(fast.getMessage(), fast.getMessage().contains("has no function 'fast'"));
        scheduler.close();
        waitUntilBalanced(backend);

        FakeBackend resident = new FakeBackend();
        try (ChunkScheduler<ChunkProgram> kept = new ChunkScheduler<>(video, resident)) {
            for (String function : List.of(Contract.PLAIN, Contract.TDTM, Contract.PLAIN, Contract.TDTM)) {
                kept.run(latent, function);
            }
        }
        assertEquals(List.of("load depth_01:plain", "load depth_01:tdtm"),
                resident.log().stream().filter(e -> e.startsWith("load depth_01")).collect(Collectors.toList()));
    }

    private static Map<String, Tensor> feeds(List<String> names) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (String name : names) out.put(name, scalar(0));
        return out;
    }

    /**
     * The language-model vector: pipelines prefill and decode run the same chunks, each function with its own inputs and
     * outputs. A chunk's own are its first function's, so decode checked as them does not line up.
     */
    @Test
    public void languageModelFunctionsLineUpAndRunWithTheirOwnIO() throws Exception {
        JSONObject raw = Vectors.json("manifests/language-model.json");
        Artifact artifact = artifact(raw);
        Manifest.LLM llm = artifact.manifest().llm();
        List<String> outputs = new ArrayList<>(List.of(Contract.LOGITS));
        List<String> decodeInputs = new ArrayList<>(List.of(Contract.INPUTS_EMBEDS, Contract.POSITION));
        for (int layer = 0; layer < llm.numLayers(); layer++) {
            outputs.addAll(Contract.presentNames(layer));
            decodeInputs.addAll(Contract.pastNames(layer));
        }
        List<String> prefillInputs = List.of(Contract.INPUTS_EMBEDS, Contract.LAST_INDEX);
        ArtifactException unfed = assertThrows(ArtifactException.class, () -> new ChunkScheduler<>(artifact,
                new FakeBackend(), Contract.DECODE, null, true, decodeInputs, outputs, null));
        assertTrue(unfed.getMessage(), unfed.getMessage().contains("chunk 'lm_head' needs 'last_index'"));
        FakeBackend backend = new FakeBackend();
        List<String> functions = new ArrayList<>();
        try (ChunkScheduler<ChunkProgram> prefill = new ChunkScheduler<>(artifact, backend, Contract.PREFILL, null, true,
                prefillInputs, outputs, Contract.prefillFunction(llm.prefillLength()));
                ChunkScheduler<ChunkProgram> decode = new ChunkScheduler<>(artifact, backend, Contract.DECODE, null, true,
                        decodeInputs, outputs, Contract.DECODE)) {
            for (int length : llm.prefillLengths()) {
                String function = Contract.prefillFunction(length);
                assertEquals(outputs, new ArrayList<>(prefill.run(feeds(prefillInputs), function).keySet()));
                functions.add(function);
                functions.add(function);
            }
            assertEquals(outputs, new ArrayList<>(decode.run(feeds(decodeInputs)).keySet()));
            functions.add(Contract.DECODE);
            functions.add(Contract.DECODE);
            ArtifactException unknown = assertThrows(ArtifactException.class,
                    () -> prefill.run(feeds(prefillInputs), Contract.prefillFunction(48)));
            assertTrue(unknown.getMessage(), unknown.getMessage().contains("has no function 'prefill_48'"));
        }
        List<Run> runs = backend.runs();
        assertEquals(functions, runs.stream().map(r -> r.program().function()).collect(Collectors.toList()));
        for (Run run : runs) {
            Manifest.FunctionEntry entry = run.program().chunk().functions().get(run.program().function());
            assertEquals(Contract.methodName(run.program().function()), run.program().method());
            assertEquals(entry.inputs(), run.program().inputs());
            assertEquals(entry.outputs(), run.program().outputs());
            assertEquals(run.program().chunk().name() + "." + run.program().function(),
                    run.program().inputs().stream().map(Manifest.TensorSpec::name).collect(Collectors.toSet()), run.inputs());
        }
        assertEquals(List.of(1, llm.prefillLengths().get(0), llm.hiddenSize()), runs.get(0).program().inputs().get(0).shape());

        // prefill_32 of lm_head takes 31 positions: refused when it first runs, before anything loads
        raw.getJSONArray("chunks").getJSONObject(1).getJSONObject("functions").getJSONObject(Contract.prefillFunction(32))
                .getJSONArray("inputs").getJSONObject(0).put("shape", new JSONArray(List.of(1, 31, 64)));
        FakeBackend skewed = new FakeBackend();
        try (ChunkScheduler<ChunkProgram> prefill = new ChunkScheduler<>(artifact(raw), skewed, Contract.PREFILL, null,
                true, prefillInputs, outputs, Contract.prefillFunction(llm.prefillLength()))) {
            ArtifactException misaligned = assertThrows(ArtifactException.class,
                    () -> prefill.run(feeds(prefillInputs), Contract.prefillFunction(32)));
            assertEquals("chunk 'lm_head' expects hidden_02 [1, 31, 64] float32 but the previous chunk gives [1, 32, 64] "
                    + "float32: the chunks do not line up, re-export the artifact", misaligned.getMessage());
            assertTrue("nothing loads or runs before the check", skewed.log().isEmpty());
            prefill.run(feeds(prefillInputs));
        }
    }

    @Test
    public void timelineKeepsTheLatestEvents() throws Exception {
        Artifact single = artifact(manifest(List.of(spec("only", List.of("x"), List.of("y"), 1)), "main"));
        try (ChunkScheduler<ChunkProgram> scheduler = new ChunkScheduler<>(single, new FakeBackend())) {
            int runs = ChunkTimeline.CAPACITY + 100;
            for (int i = 0; i < runs; i++) scheduler.run(Map.of("x", scalar(0)));
            List<ChunkTimeline.Event> events = scheduler.timeline().events();
            assertEquals(ChunkTimeline.CAPACITY, events.size());
            for (int i = 0; i < events.size(); i++) {
                ChunkTimeline.Event event = events.get(i);
                assertEquals(100 + i, event.invocation());
                assertTrue(event.kind() == ChunkTimeline.Kind.COMPUTE && event.start() <= event.end());
            }
            assertEquals(runs, scheduler.invocation());
        }
    }

    @Test
    public void loadErrorsNameTheChunk() throws Exception {
        for (Double budget : new Double[] {null, 35.0}) {  // c loads on the caller's thread, or ahead on the loader
            try (ChunkScheduler<ChunkProgram> scheduler = scheduler(line(), new FakeBackend(0, 0, Set.of("c")), budget)) {
                ChunkLoadException error = assertThrows(ChunkLoadException.class, () -> scheduler.run(Map.of("x", scalar(0))));
                assertEquals("c", error.chunk());
                assertTrue(error.getMessage(), error.getMessage().startsWith("chunk 'c' failed to load: IllegalStateException: Failure"));
            }
        }
    }

    @Test
    public void misalignedChunksAreRefused() throws Exception {
        JSONObject shapes = lineManifest();
        shapes.getJSONArray("chunks").getJSONObject(1).getJSONArray("inputs").getJSONObject(0)
                .put("shape", new JSONArray().put(2));
        ArtifactException misaligned = assertThrows(ArtifactException.class,
                () -> new ChunkScheduler<>(artifact(shapes), new FakeBackend()));
        assertEquals("chunk 'b' expects h1 [2] float32 but the previous chunk gives [1] float32: the chunks do not line up, "
                + "re-export the artifact", misaligned.getMessage());
        Artifact orphan = artifact(manifest(List.of(spec("a", List.of("x"), List.of("h1"), 1),
                spec("b", List.of("h9"), List.of("y"), 1)), "main"));
        ArtifactException unfed = assertThrows(ArtifactException.class, () -> new ChunkScheduler<>(orphan, new FakeBackend()));
        assertTrue(unfed.getMessage(), unfed.getMessage().contains("chunk 'b' needs 'h9', which no earlier chunk produces"));
        ArtifactException unknown = assertThrows(ArtifactException.class,
                () -> new ChunkScheduler<>(line(), new FakeBackend(), null, null, true, null, List.of("w"), null));
        assertTrue(unknown.getMessage(), unknown.getMessage().startsWith("no chunk produces w"));
        MemoryPlanException small = assertThrows(MemoryPlanException.class, () -> scheduler(line(), new FakeBackend(), 5.0));
        assertEquals("a", small.chunk());
        assertNull(new ChunkScheduler<>(line(), new FakeBackend()).plan().budgetBytes());
    }

    /** Every load is unloaded (a cancelled load in flight unloads when it finishes). */
    private static void waitUntilBalanced(FakeBackend backend) throws InterruptedException {
        long deadline = System.nanoTime() + 2_000_000_000L;
        while (loads(backend, "load ") != loads(backend, "unload ") && System.nanoTime() < deadline) Thread.sleep(10);
        assertEquals("every loaded chunk is unloaded", loads(backend, "load "), loads(backend, "unload "));
    }

    private static long loads(FakeBackend backend, String prefix) {
        return backend.log().stream().filter(e -> e.startsWith(prefix)).count();
    }
}
