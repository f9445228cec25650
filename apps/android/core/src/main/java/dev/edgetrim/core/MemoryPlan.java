package dev.edgetrim.core;

import java.util.List;

/**
 * Which chunks of a pipeline stay loaded and which are streamed (loaded before use, released after).
 *
 * @param resident chunk indices kept loaded: always a prefix 0..k-1
 * @param streamed the remaining chunk indices, k..n-1
 * @param overlap whether streamed loads run ahead (chunk i+1 loads while chunk i computes)
 * @param budgetBytes the budget in bytes, null for none
 */
public record MemoryPlan(List<Integer> resident, List<Integer> streamed, boolean overlap, Long budgetBytes) {
    /** Bytes in a megabyte, as the planner counts them. */
    public static final long BYTES_PER_MB = 1L << 20;

    public String summary() {
        if (streamed.isEmpty()) return "all chunks resident";
        String mode = overlap ? "with overlap" : "without overlap (budget fits one streamed chunk)";
        return resident.size() + " resident, " + streamed.size() + " streamed " + mode;
    }
}
