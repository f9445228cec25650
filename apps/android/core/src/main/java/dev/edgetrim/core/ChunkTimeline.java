package dev.edgetrim.core;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

/** The latest load / compute events of a scheduler, for an on-screen timeline; thread-safe. */
public final class ChunkTimeline {
    /** Events kept: a decode loop runs the pipeline once per token. */
    public static final int CAPACITY = 4096;

    public enum Kind { LOAD, COMPUTE }

    /**
     * One load or compute of a chunk; times in seconds since the timeline was created (monotonic clock).
     *
     * @param invocation the run the event belongs to (a prefetch belongs to the run that uses it)
     */
    public record Event(String chunk, Kind kind, double start, double end, int invocation) {}

    private final long origin = System.nanoTime();
    private final ArrayDeque<Event> buffer = new ArrayDeque<>();

    /** Oldest first, at most {@link #CAPACITY}. */
    public synchronized List<Event> events() {
        return new ArrayList<>(buffer);
    }

    /** Seconds since the timeline was created. */
    public double now() {
        return (System.nanoTime() - origin) / 1e9;
    }

    synchronized void add(Event event) {
        buffer.addLast(event);
        if (buffer.size() > CAPACITY) buffer.removeFirst();
    }
}
