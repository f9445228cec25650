package dev.edgetrim.core;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The longest resident prefix such that its bytes plus the streaming slot fit the budget (Python's {@code plan_memory}).
 *
 * <p>Budget bytes = {@code (long) (budgetMB * 1048576)} (truncating). No budget, or everything fits: all resident.
 * Otherwise the slot is the two largest remaining chunks (overlap) or the largest one; two slots are tried first
 * when {@code overlap} is allowed. A budget below the largest chunk is refused with the minimum (MB, 1 decimal).
 */
public final class MemoryPlanner {
    private MemoryPlanner() {}

    /** The plan for chunks of an artifact: the bytes each reads ({@link Manifest#weightBytes}), named in the refusal. */
    public static MemoryPlan plan(List<Manifest.Chunk> chunks, Manifest manifest, Double budgetMB, boolean overlap)
            throws MemoryPlanException {
        long[] sizes = new long[chunks.size()];
        List<String> names = new ArrayList<>();
        for (int i = 0; i < sizes.length; i++) {
            sizes[i] = manifest.weightBytes(chunks.get(i));
            names.add(chunks.get(i).name());
        }
        return plan(sizes, budgetMB, overlap, names);
    }

    /** The plan for chunks of {@code chunkBytes} bytes; {@code names} (one per chunk, or empty) name the refusal's chunk. */
    public static MemoryPlan plan(long[] chunkBytes, Double budgetMB, boolean overlap, List<String> names)
            throws MemoryPlanException {
        int n = chunkBytes.length;
        if (budgetMB == null || n == 0) return new MemoryPlan(range(0, n), List.of(), false, null);
        int largestIndex = 0;
        for (int i = 1; i < n; i++) if (chunkBytes[i] > chunkBytes[largestIndex]) largestIndex = i;
        long largest = chunkBytes[largestIndex];
        double minimumMB = new BigDecimal((double) largest / MemoryPlan.BYTES_PER_MB)
                .setScale(1, RoundingMode.HALF_EVEN).doubleValue();
        MemoryPlanException refusal = new MemoryPlanException(budgetMB,
                largestIndex < names.size() ? names.get(largestIndex) : "chunk " + largestIndex, minimumMB);
        if (!Double.isFinite(budgetMB)) throw refusal;
        long budget = (long) (budgetMB * MemoryPlan.BYTES_PER_MB);
        if (budget < largest) throw refusal;
        if (sum(chunkBytes, 0, n) <= budget) return new MemoryPlan(range(0, n), List.of(), false, budget);
        for (boolean twoSlots : overlap ? new boolean[] {true, false} : new boolean[] {false}) {
            for (int split = n - 1; split >= 0; split--) {
                long[] rest = Arrays.copyOfRange(chunkBytes, split, n);
                Arrays.sort(rest);
                boolean overlapping = twoSlots && rest.length > 1;
                long slot = overlapping ? rest[rest.length - 1] + rest[rest.length - 2] : rest[rest.length - 1];
                if (sum(chunkBytes, 0, split) + slot <= budget) {
                    return new MemoryPlan(range(0, split), range(split, n), overlapping, budget);
                }
            }
        }
        return new MemoryPlan(List.of(), range(0, n), false, budget);
    }

    private static long sum(long[] values, int from, int to) {
        long total = 0;
        for (int i = from; i < to; i++) total += values[i];
        return total;
    }

    private static List<Integer> range(int from, int to) {
        List<Integer> out = new ArrayList<>();
        for (int i = from; i < to; i++) out.add(i);
        return List.copyOf(out);
    }
}
