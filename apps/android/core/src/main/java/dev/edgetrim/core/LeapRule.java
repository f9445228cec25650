package dev.edgetrim.core;

import java.util.ArrayList;
import java.util.List;

/**
 * Adaptive LPL: leap once the cosine similarity of consecutive velocities stalls.
 *
 * <p>From the second observed step on, s_i = cos(v_i, v_{i-1}) (float64) improves when s_i > best + threshold (then
 * best = s_i and the stalls reset), otherwise it counts a stall. Leap at the first step i >= minSteps with
 * stalls >= patience. Mutable: {@link Sampler#sample} observes a copy, so one rule serves many runs.
 */
public final class LeapRule {
    private final int minSteps;
    private final int patience;
    private final double threshold;
    private double best = Double.NEGATIVE_INFINITY;
    private int stalls;
    private final List<Double> history = new ArrayList<>();
    private float[] previous;

    /** Python's and Swift's defaults: minSteps 10, patience 3, threshold 1e-3. */
    public LeapRule() {
        this(10, 3, 1e-3);
    }

    public LeapRule(int minSteps, int patience, double threshold) {
        this.minSteps = minSteps;
        this.patience = patience;
        this.threshold = threshold;
    }

    /** A rule in the same state (Swift's value semantics). */
    LeapRule copy() {
        LeapRule copy = new LeapRule(minSteps, patience, threshold);
        copy.best = best;
        copy.stalls = stalls;
        copy.history.addAll(history);
        copy.previous = previous;
        return copy;
    }

    public int minSteps() {
        return minSteps;
    }

    public int patience() {
        return patience;
    }

    public double threshold() {
        return threshold;
    }

    /** The best similarity so far; -infinity before the second step. */
    public double best() {
        return best;
    }

    public int stalls() {
        return stalls;
    }

    /** s_i of each observed step after the first. */
    public List<Double> history() {
        return List.copyOf(history);
    }

    /**
     * Records the velocity of {@code step} (copied: the caller may reuse the array); true when sampling should leap at
     * this step. Every velocity must have as many values as the first.
     */
    public boolean observe(int step, float[] velocity) {
        if (previous != null) {
            double similarity = cosine(velocity, previous);
            history.add(similarity);
            if (similarity > best + threshold) {
                best = similarity;
                stalls = 0;
            } else {
                stalls++;
            }
        }
        previous = velocity.clone();
        return step >= minSteps && stalls >= patience;
    }

    /** cos(a, b) in float64, summed in order; the norms' product is floored at 1e-30. */
    static double cosine(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new IllegalArgumentException("the velocity has " + a.length + " values, the previous one " + b.length);
        }
        double dot = 0;
        double aa = 0;
        double bb = 0;
        for (int i = 0; i < a.length; i++) {
            double x = a[i];
            double y = b[i];
            dot += x * y;
            aa += x * x;
            bb += y * y;
        }
        return dot / Math.max(Math.sqrt(aa) * Math.sqrt(bb), 1e-30);
    }
}
