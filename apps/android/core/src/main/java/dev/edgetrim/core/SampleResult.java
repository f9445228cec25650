package dev.edgetrim.core;

import java.util.List;

/**
 * One sampling run: the latent (flat, the noise's layout), model evaluations, where LPL leapt, per-step details.
 *
 * @param stepsRun model evaluations (a classifier-free-guidance pair counts once)
 * @param leapStep the step at which LPL leapt; null: all steps ran
 * @param functions the denoiser function of each evaluated step: {@link Contract#TDTM} or {@link Contract#PLAIN}
 * @param stepMs each evaluation's time
 * @param similarities adaptive LPL's cosine similarities (empty without a rule)
 */
public record SampleResult(float[] latent, int stepsRun, Integer leapStep, List<String> functions, List<Double> stepMs,
        List<Double> similarities) {}
