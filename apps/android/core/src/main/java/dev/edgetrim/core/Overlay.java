package dev.edgetrim.core;

import java.util.ArrayList;
import java.util.List;

/**
 * The kept-token overlay's mapping: flat kept positions {@code p * N + row * side + col} (N = side^2 patches per
 * view) -> the view and patch each kept token came from ({@code edgetrim/runtime/overlay.py} {@code kept_cells}).
 */
public final class Overlay {
    private Overlay() {}

    /**
     * A kept token's place: its partition (0 = the full view, then the grid cells row-major) and its patch's row and
     * column inside that view.
     */
    public record KeptCell(int partition, int row, int col) {}

    /** The cells of {@code positions}, in order; {@code side} patches per side of a view. */
    public static List<KeptCell> keptCells(List<Integer> positions, int side) {
        if (side <= 0) throw new IllegalArgumentException("patches per side must be positive, not " + side);
        int n = side * side;
        List<KeptCell> out = new ArrayList<>(positions.size());
        for (int p : positions) {
            if (p < 0) throw new IllegalArgumentException("kept position " + p + " is negative");
            out.add(new KeptCell(p / n, p % n / side, p % side));
        }
        return List.copyOf(out);
    }

    /** How many tokens each of the {@code partitions} views keeps (index = partition). */
    public static int[] keptCounts(List<KeptCell> cells, int partitions) {
        int[] counts = new int[partitions];
        for (KeptCell cell : cells) {
            if (cell.partition() >= partitions) {
                throw new IllegalArgumentException("kept cell in partition " + cell.partition() + " of " + partitions);
            }
            counts[cell.partition()]++;
        }
        return counts;
    }
}
