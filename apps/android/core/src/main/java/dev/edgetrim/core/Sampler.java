package dev.edgetrim.core;

import java.util.ArrayList;
import java.util.List;
import java.util.function.IntConsumer;

/**
 * Open-Sora 1.2 rectified-flow sampling with TDTM steps and LPL, exactly as edgetrim's Python runtime (sampler.py);
 * Swift's {@code RectifiedFlow}.
 *
 * <p>Schedule: t_i = (1 - i / N) * 1000 for i < N, each shifted by t' = r t / (1 + (r - 1) t) on t / 1000 (float64).
 * Step i: z += v_i * (t_i - t_{i+1}) / 1000 (t_N = 0), the factor rounded to float32 as the latent is float32. Steps
 * i < mergeSteps use the {@link Contract#TDTM} function, later ones {@link Contract#PLAIN}. LPL at step k:
 * z_0 = z + v_k * t_k / 1000 ends sampling after k + 1 evaluations; fixed at {@code leapAt}, or adaptive by a
 * {@link LeapRule} (a fixed leap wins; the rule still records its similarities).
 */
public final class Sampler {
    private Sampler() {}

    public static final double NUM_TIMESTEPS = 1000.0;
    public static final int BASE_RESOLUTION = 512 * 512;

    /**
     * The model: the guided velocity at a latent (flat, the noise's layout), as many values. The sampler never
     * changes an array after handing it over, nor one it receives; the callback must not change {@code latent}.
     *
     * @param <E> what the model throws (e.g. {@link ArtifactException} from a {@link ChunkScheduler})
     */
    @FunctionalInterface
    public interface Velocity<E extends Exception> {
        float[] evaluate(float[] latent, double timestep, String function) throws E;
    }

    /** The schedule's shift r: sqrt(H * W / 512^2) * sqrt(frames / 17 * 5) (integer division; 1 frame: 1). */
    public static double shiftRatio(int pixelHeight, int pixelWidth, int pixelFrames) {
        return shiftRatio(pixelHeight, pixelWidth, pixelFrames, BASE_RESOLUTION);
    }

    /** The shift r with the base resolution (pixels) of a manifest's scheduler. */
    public static double shiftRatio(int pixelHeight, int pixelWidth, int pixelFrames, int baseResolution) {
        int frames = pixelFrames == 1 ? 1 : pixelFrames / 17 * 5;
        return Math.sqrt((double) ((long) pixelHeight * pixelWidth) / baseResolution) * Math.sqrt(frames);
    }

    /** [N] shifted timesteps in (0, 1000], descending. */
    public static double[] timesteps(int numSteps, double ratio) {
        return timesteps(numSteps, ratio, NUM_TIMESTEPS);
    }

    /** [N] shifted timesteps in (0, numTimesteps], descending. */
    public static double[] timesteps(int numSteps, double ratio, double numTimesteps) {
        double[] out = new double[numSteps];
        for (int i = 0; i < numSteps; i++) {
            double t = 1.0 - (double) i / numSteps;
            out[i] = ratio * t / (1.0 + (ratio - 1.0) * t) * numTimesteps;
        }
        return out;
    }

    /** The [N] schedule of a video denoiser: its pixel size and frames, its scheduler's base resolution. */
    public static double[] schedule(Manifest.Video video, int numSteps) {
        return timesteps(numSteps, shiftRatio(video.pixelSize().get(0), video.pixelSize().get(1), video.pixelFrames(),
                video.scheduler().baseResolution()));
    }

    /** Refuses a plan the sampler cannot run: steps >= 1, mergeSteps in 0..steps, leapAt (null: none) in 1..steps - 1. */
    public static void checkPlan(int numSteps, int mergeSteps, Integer leapAt) throws SamplerException {
        if (numSteps < 1) throw new SamplerException("steps " + numSteps + " must be at least 1: Open-Sora 1.2 uses 30");
        if (mergeSteps < 0 || mergeSteps > numSteps) {
            throw new SamplerException("mergeSteps " + mergeSteps + " is outside 0..." + numSteps
                    + " (steps): e.g. mergeSteps 15");
        }
        if (leapAt != null && (leapAt < 1 || leapAt >= numSteps)) {
            throw new SamplerException("leapAt " + leapAt + " is outside 1..." + (numSteps - 1) + " (steps " + numSteps
                    + "): e.g. leapAt 15");
        }
    }

    /** Classifier-free guidance v_u + g (v_c - v_u), in float32; both halves have as many values. */
    public static float[] guided(float[] unconditional, float[] conditional, double guidance) {
        if (unconditional.length != conditional.length) {
            throw new IllegalArgumentException("the unconditional velocity has " + unconditional.length
                    + " values, the conditional one " + conditional.length);
        }
        float g = (float) guidance;
        float[] out = new float[unconditional.length];
        for (int i = 0; i < out.length; i++) out[i] = unconditional[i] + g * (conditional[i] - unconditional[i]);
        return out;
    }

    /** All steps of {@code schedule}, every one {@link Contract#PLAIN}, no leap. */
    public static <E extends Exception> SampleResult sample(Velocity<E> velocity, float[] noise, double[] schedule)
            throws SamplerException, E {
        return sample(velocity, noise, schedule, 0, null, null);
    }

    /** Sampling over 1000 timesteps; {@code leapAt} and {@code rule} may be null. */
    public static <E extends Exception> SampleResult sample(Velocity<E> velocity, float[] noise, double[] schedule,
            int mergeSteps, Integer leapAt, LeapRule rule) throws SamplerException, E {
        return sample(velocity, noise, schedule, mergeSteps, leapAt, rule, NUM_TIMESTEPS, step -> {});
    }

    /**
     * Euler sampling from {@code noise} over {@code schedule} (descending timesteps). {@code rule} (null: none) is
     * copied, the caller's stays as it was; {@code progress} sees each evaluated step after its evaluation. The plan
     * is checked before the first evaluation; a velocity of another length than the latent is refused.
     */
    public static <E extends Exception> SampleResult sample(Velocity<E> velocity, float[] noise, double[] schedule,
            int mergeSteps, Integer leapAt, LeapRule rule, double numTimesteps, IntConsumer progress)
            throws SamplerException, E {
        int n = schedule.length;
        checkPlan(n, mergeSteps, leapAt);
        LeapRule observer = rule == null ? null : rule.copy();
        float[] z = noise;
        List<String> functions = new ArrayList<>();
        List<Double> stepMs = new ArrayList<>();
        Integer leap = null;
        for (int i = 0; i < n; i++) {
            double t = schedule[i];
            String function = i < mergeSteps ? Contract.TDTM : Contract.PLAIN;
            long start = System.nanoTime();
            float[] v = velocity.evaluate(z, t, function);
            stepMs.add((System.nanoTime() - start) / 1e6);
            if (v.length != z.length) {
                throw new SamplerException("the velocity has " + v.length + " values, the latent " + z.length
                        + ": the denoiser's output does not match");
            }
            functions.add(function);
            progress.accept(i);
            boolean adaptive = observer != null && observer.observe(i, v);
            boolean leaps = leapAt != null ? leapAt == i : adaptive && i < n - 1;
            double dt = leaps || i == n - 1 ? t : t - schedule[i + 1];
            float scale = (float) (dt / numTimesteps);
            float[] next = new float[z.length];
            for (int k = 0; k < next.length; k++) next[k] = z[k] + v[k] * scale;
            z = next;
            if (leaps) {
                leap = i;
                break;
            }
        }
        return new SampleResult(z, functions.size(), leap, List.copyOf(functions), List.copyOf(stepMs),
                observer == null ? List.of() : observer.history());
    }
}
