package dev.edgetrim.core;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * Runs one pipeline of an artifact in order under a memory budget (Python's {@code ChunkLoader}), passing tensors by
 * name: {@code run(feeds) -> outputs}.
 *
 * <p>The resident prefix of the {@link MemoryPlan} loads once and stays. Streamed chunks load before use and are
 * unloaded right after they run; with overlap, chunk i+1 loads on a background thread (an {@link ExecutorService})
 * while chunk i computes, and after the last chunk the first streamed chunk of the next invocation starts loading.
 * {@link #run(Map, String)} picks the function of multi-function chunks, each chunk running with that function's
 * inputs and outputs ({@link Artifact#io}); each (chunk, function) loads apart. Call
 * {@code run} and {@code warm} from one thread at a time; {@link #timeline()} may be read from any thread.
 * {@link #close()} unloads everything and ends the loader thread; the scheduler cannot run afterwards.
 *
 * @param <H> the backend's loaded-program handle
 */
public final class ChunkScheduler<H> implements AutoCloseable {
    private final Artifact artifact;
    private final ChunkBackend<H> backend;
    private final List<Manifest.Chunk> chunks;
    private final MemoryPlan plan;
    private final String function;
    private final List<String> inputNames;
    private final List<String> outputNames;
    private final ChunkTimeline timeline = new ChunkTimeline();
    private final ExecutorService loader = Executors.newSingleThreadExecutor(task -> {
        Thread thread = new Thread(task, "edgetrim-chunk-loader");
        thread.setDaemon(true);
        return thread;
    });
    private final Map<Key, H> resident = new HashMap<>();
    private final Map<Key, PendingLoad<H>> pending = new HashMap<>();
    private final Set<String> checked = new HashSet<>();  // functions whose chunks line up (null: each chunk's first)
    private int invocation;
    private boolean closed;

    /** A loaded program: a chunk index and the function (null for a chunk without functions). */
    private record Key(int index, String function) {}

    /** The default pipeline, all inputs of its first chunk and outputs of its last, no budget. */
    public ChunkScheduler(Artifact artifact, ChunkBackend<H> backend) throws ArtifactException {
        this(artifact, backend, null, null, true, null, null, null);
    }

    /**
     * Checks that the pipeline's chunks line up for {@code function} (every input fed or produced earlier with the same
     * shape and dtype, every output produced) and plans memory; loads nothing yet. Other functions are checked when
     * they first run.
     *
     * @param pipeline the pipeline to run (null: the only one, or {@code main})
     * @param memoryBudgetMB the budget (null: none, all resident)
     * @param overlap whether streamed loads may run ahead of compute
     * @param inputs what the caller feeds (null: the first chunk's inputs, of {@code function})
     * @param outputs what {@code run} returns (null: the last chunk's outputs, of {@code function})
     * @param function what multi-function chunks run unless {@code run} says otherwise (null: each chunk's first)
     */
    public ChunkScheduler(Artifact artifact, ChunkBackend<H> backend, String pipeline, Double memoryBudgetMB,
            boolean overlap, List<String> inputs, List<String> outputs, String function) throws ArtifactException {
        this.artifact = artifact;
        this.backend = backend;
        this.function = function;
        chunks = artifact.pipeline(pipeline);
        inputNames = List.copyOf(inputs != null ? inputs : names(artifact.io(chunks.get(0), function).inputs()));
        outputNames = List.copyOf(outputs != null ? outputs
                : names(artifact.io(chunks.get(chunks.size() - 1), function).outputs()));
        check(function);
        plan = MemoryPlanner.plan(chunks, artifact.manifest(), memoryBudgetMB, overlap);
    }

    public Artifact artifact() {
        return artifact;
    }

    /** The pipeline's chunks in run order. */
    public List<Manifest.Chunk> chunks() {
        return chunks;
    }

    public MemoryPlan plan() {
        return plan;
    }

    public List<String> inputNames() {
        return inputNames;
    }

    public List<String> outputNames() {
        return outputNames;
    }

    /** Load and compute events, the latest {@link ChunkTimeline#CAPACITY}. */
    public ChunkTimeline timeline() {
        return timeline;
    }

    /** Completed runs. */
    public int invocation() {
        return invocation;
    }

    /** The function {@code run} and {@code warm} run unless told otherwise (null: each chunk's first). */
    public String function() {
        return function;
    }

    /**
     * Every chunk input of {@code function} must come from the pipeline inputs or an earlier chunk, with the same shape
     * and dtype, and some chunk must produce each output (Python's {@code check_io} and {@code _check}); checked once
     * per function.
     */
    private void check(String function) throws ArtifactException {
        if (checked.contains(function)) return;
        Map<String, Manifest.TensorSpec> available = new HashMap<>();
        Set<String> produced = new HashSet<>();
        for (Manifest.Chunk chunk : chunks) {
            Artifact.IO io = artifact.io(chunk, function);
            for (Manifest.TensorSpec spec : io.inputs()) {
                Manifest.TensorSpec given = available.get(spec.name());
                if (given != null) {
                    if (!given.shape().equals(spec.shape()) || !given.dtype().equals(spec.dtype())) {
                        throw new ArtifactException("chunk '" + chunk.name() + "' expects " + spec.name() + " "
                                + spec.shape() + " " + spec.dtype() + " but the previous chunk gives " + given.shape()
                                + " " + given.dtype() + ": the chunks do not line up, re-export the artifact");
                    }
                } else if (inputNames.contains(spec.name())) {
                    available.put(spec.name(), spec);
                } else {
                    throw new ArtifactException("chunk '" + chunk.name() + "' needs '" + spec.name()
                            + "', which no earlier chunk produces: the chunks do not line up, re-export the artifact");
                }
            }
            for (Manifest.TensorSpec spec : io.outputs()) {
                available.put(spec.name(), spec);
                produced.add(spec.name());
            }
        }
        List<String> missing = new ArrayList<>(outputNames);
        missing.removeAll(produced);
        if (!missing.isEmpty()) {
            throw new ArtifactException("no chunk produces " + String.join(", ", missing)
                    + ": the artifact does not match this runtime");
        }
        checked.add(function);
    }

    /** Loads the resident chunks of {@code function} (null: the scheduler's) now (otherwise they load on first use). */
    public void warm(String function) throws ArtifactException {
        for (int index : plan.resident()) acquire(index, function != null ? function : this.function);
    }

    /** Runs the pipeline once, multi-function chunks with the scheduler's {@link #function()}. */
    public Map<String, Tensor> run(Map<String, Tensor> feeds) throws ArtifactException {
        return run(feeds, null);
    }

    /**
     * Runs the pipeline once; {@code function} selects the variant of multi-function chunks (null: the scheduler's
     * {@link #function()}), checked to line up the first time it runs. Returns the output tensors by name, in
     * {@link #outputNames()} order.
     */
    public Map<String, Tensor> run(Map<String, Tensor> feeds, String function) throws ArtifactException {
        if (closed) throw new IllegalStateException("the chunk scheduler is closed: create a new one to run the pipeline");
        String chosen = function != null ? function : this.function;
        check(chosen);
        List<String> absent = new ArrayList<>();
        for (String name : inputNames) if (!feeds.containsKey(name)) absent.add(name);
        if (!absent.isEmpty()) {
            throw new ArtifactException("missing input " + String.join(", ", absent) + " for pipeline "
                    + String.join("/", chunkNames(chunks)));
        }
        Map<String, Tensor> env = new HashMap<>(feeds);
        for (int index = 0; index < chunks.size(); index++) {
            Manifest.Chunk chunk = chunks.get(index);
            H handle = acquire(index, chosen);
            boolean streamed = !plan.resident().contains(index);
            try {
                Integer next = nextStreamed(index);
                if (plan.overlap() && next != null && next != index) {
                    prefetch(next, chosen, invocation + (next <= index ? 1 : 0));
                }
                Map<String, Tensor> inputs = new HashMap<>();
                for (Manifest.TensorSpec spec : artifact.io(chunk, chosen).inputs()) {
                    inputs.put(spec.name(), env.get(spec.name()));
                }
                double start = timeline.now();
                Map<String, Tensor> outputs;
                try {
                    outputs = backend.run(handle, inputs);
                } catch (Exception e) {
                    throw new ArtifactException("chunk '" + chunk.name() + "' failed to run: "
                            + e.getClass().getSimpleName() + ": " + e.getMessage(), e);
                }
                timeline.add(new ChunkTimeline.Event(chunk.name(), ChunkTimeline.Kind.COMPUTE, start, timeline.now(), invocation));
                env.putAll(outputs);
            } finally {
                if (streamed) backend.unload(handle);
            }
        }
        invocation++;
        Map<String, Tensor> result = new LinkedHashMap<>();
        for (String name : outputNames) {
            Tensor tensor = env.get(name);
            if (tensor == null) {
                throw new ArtifactException("the chunks returned no " + name + ": the artifact does not match this runtime");
            }
            result.put(name, tensor);
        }
        return result;
    }

    /** Unloads every chunk, drops pending loads (a load in flight is unloaded when it finishes), ends the loader thread. */
    @Override
    public void close() {
        closed = true;
        for (PendingLoad<H> load : pending.values()) load.cancel(backend);
        pending.clear();
        for (H handle : resident.values()) backend.unload(handle);
        resident.clear();
        loader.shutdown();
    }

    /** Loads are per (chunk, function): a chunk without functions has one whatever is asked; null means the first. */
    private Key key(int index, String function) {
        Map<String, Manifest.FunctionEntry> functions = chunks.get(index).functions();
        if (functions == null || functions.isEmpty()) return new Key(index, null);
        return new Key(index, function != null ? function : functions.keySet().iterator().next());
    }

    private H acquire(int index, String function) throws ArtifactException {
        Key key = key(index, function);
        H handle = resident.get(key);
        if (handle != null) return handle;
        for (Iterator<Map.Entry<Key, PendingLoad<H>>> it = pending.entrySet().iterator(); it.hasNext(); ) {
            Map.Entry<Key, PendingLoad<H>> stale = it.next();  // prefetched another function of this chunk
            if (stale.getKey().index() == index && !stale.getKey().equals(key)) {
                stale.getValue().cancel(backend);
                it.remove();
            }
        }
        PendingLoad<H> load = pending.remove(key);
        handle = load != null ? load.await() : load(key, invocation);
        if (plan.resident().contains(index)) resident.put(key, handle);
        return handle;
    }

    private void prefetch(int index, String function, int forInvocation) {
        Key key = key(index, function);
        if (pending.containsKey(key) || resident.containsKey(key)) return;
        PendingLoad<H> load = new PendingLoad<>();
        pending.put(key, load);
        loader.execute(() -> load.perform(() -> load(key, forInvocation), backend));
    }

    /** The streamed chunk that runs after {@code index} (wrapping to the next invocation), or null. */
    private Integer nextStreamed(int index) {
        for (int candidate : plan.streamed()) if (candidate > index) return candidate;
        return plan.streamed().isEmpty() ? null : plan.streamed().get(0);
    }

    /** Loads one (chunk, function) on the calling thread, recording the load event. */
    private H load(Key key, int forInvocation) throws ArtifactException {
        Manifest.Chunk chunk = chunks.get(key.index());
        Artifact.Program program = artifact.program(chunk, key.function());
        Artifact.IO io = artifact.io(chunk, key.function());
        double start = timeline.now();
        H handle;
        try {
            handle = backend.load(new ChunkProgram(chunk, key.function(), program.path(), program.method(), io.inputs(),
                    io.outputs()));
        } catch (Exception e) {
            throw new ChunkLoadException(chunk.name(), e);
        }
        timeline.add(new ChunkTimeline.Event(chunk.name(), ChunkTimeline.Kind.LOAD, start, timeline.now(), forInvocation));
        return handle;
    }

    private static List<String> names(List<Manifest.TensorSpec> specs) {
        List<String> out = new ArrayList<>();
        for (Manifest.TensorSpec spec : specs) out.add(spec.name());
        return out;
    }

    private static List<String> chunkNames(List<Manifest.Chunk> chunks) {
        List<String> out = new ArrayList<>();
        for (Manifest.Chunk chunk : chunks) out.add(chunk.name());
        return out;
    }

    private interface Loading<H> {
        H load() throws ArtifactException;
    }

    /**
     * A load running on the loader thread: {@code await} blocks for its handle (or rethrows its error); {@code cancel}
     * drops it, unloading the handle once there is one.
     */
    private static final class PendingLoad<H> {
        private final CountDownLatch done = new CountDownLatch(1);
        private H handle;
        private Exception error;
        private boolean cancelled;

        void perform(Loading<H> loading, ChunkBackend<H> backend) {
            try {
                synchronized (this) {
                    if (cancelled) return;
                }
                H loaded = null;
                Exception failure = null;
                try {
                    loaded = loading.load();
                } catch (ArtifactException | RuntimeException e) {
                    failure = e;
                }
                H dropped = null;
                synchronized (this) {
                    if (cancelled) {
                        dropped = loaded;
                    } else {
                        handle = loaded;
                        error = failure;
                    }
                }
                if (dropped != null) backend.unload(dropped);
            } finally {
                done.countDown();
            }
        }

        H await() throws ArtifactException {
            boolean interrupted = false;
            while (true) {
                try {
                    done.await();
                    break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            if (interrupted) Thread.currentThread().interrupt();
            synchronized (this) {
                if (error instanceof ArtifactException failure) throw failure;
                if (error != null) throw (RuntimeException) error;
                return handle;
            }
        }

        void cancel(ChunkBackend<H> backend) {
            H dropped;
            synchronized (this) {
                cancelled = true;
                dropped = handle;
                handle = null;
            }
            if (dropped != null) backend.unload(dropped);
        }
    }
}
