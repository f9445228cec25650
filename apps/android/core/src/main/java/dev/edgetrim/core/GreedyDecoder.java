package dev.edgetrim.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.function.IntConsumer;

/**
 * Greedy decoding over a static KV cache, whatever backend runs the model.
 *
 * <p>The prompt embeddings [n, D] (n <= P) are right-padded with zeros to the smallest exported prefill length that
 * holds them (P, or a shorter prefill bucket) and prefilled with {@code lastIndex} n - 1 by that length's function
 * ({@link Contract#prefillFunction}, over the same weights as {@code decode}); then each step feeds the embedding row
 * [1, 1, D] of the last token at position n + k - 1 (k tokens so far) with the caches the previous call returned (a
 * backend maps its {@code present_*} outputs to the next {@code past_*} inputs). Logits are [1, V]; the next token is
 * their argmax (the first maximum; NaN wins, as numpy). Prompt + new tokens must fit the KV cache length L:
 * n + maxNewTokens - 1 <= L.
 *
 * @param <C> the caches a model call returns and the next decode step takes
 */
public final class GreedyDecoder<C> {
    /** A model call's logits [1, V] and the caches for the next decode step. */
    public record Output<C>(Tensor logits, C caches) {}

    /** Prefill: inputs_embeds [1, length, D], the index of the last prompt token, and the prefill length that runs. */
    @FunctionalInterface
    public interface Prefill<C> {
        Output<C> run(Tensor inputsEmbeds, int lastIndex, int prefillLength) throws ArtifactException;
    }

    /** One decode step: inputs_embeds [1, 1, D] at {@code position} with the previous call's caches. */
    @FunctionalInterface
    public interface Decode<C> {
        Output<C> run(Tensor inputsEmbeds, int position, C caches) throws ArtifactException;
    }

    /**
     * Greedy output: the new token ids (an EOS token included), the first token's logits [V], the prompt length n
     * (visual tokens included), the exported prefill length that ran (the smallest holding the prompt), seconds to the
     * first token (padding + prefill + argmax) and of each decode step after it. The arrays are not copied.
     */
    public record Generation(int[] tokens, float[] firstLogits, int promptTokens, int prefillLength, double ttft,
            double[] stepTimes) {
        /** Seconds of all decode steps. */
        public double decodeTime() {
            double total = 0;
            for (double step : stepTimes) total += step;
            return total;
        }

        /** Decode steps per second (the first token excluded), 0 without any. */
        public double decodeTokensPerSecond() {
            double time = decodeTime();
            return time > 0 ? stepTimes.length / time : 0;
        }
    }

    private final List<Integer> prefillLengths;
    private final int maxLength;
    private final Prompt.Embedding embedding;
    private final Prefill<C> prefill;
    private final Decode<C> decode;

    /**
     * @param prefillLengths the exported prefill lengths, the longest P ({@code llm.prefillLengths})
     * @param maxLength L, the KV cache length
     * @param embedding a token's row [D]
     */
    public GreedyDecoder(List<Integer> prefillLengths, int maxLength, Prompt.Embedding embedding, Prefill<C> prefill,
            Decode<C> decode) {
        List<Integer> sorted = new ArrayList<>(prefillLengths);
        Collections.sort(sorted);
        this.prefillLengths = List.copyOf(sorted);
        this.maxLength = maxLength;
        this.embedding = embedding;
        this.prefill = prefill;
        this.decode = decode;
    }

    /** The exported prefill lengths, ascending. */
    public List<Integer> prefillLengths() {
        return prefillLengths;
    }

    /** P, the longest exported prefill length (0 without any). */
    public int prefillLength() {
        return prefillLengths.isEmpty() ? 0 : prefillLengths.get(prefillLengths.size() - 1);
    }

    /** The smallest exported prefill length that holds {@code n} prompt tokens (n <= P). */
    public int prefillLengthFor(int n) {
        for (int length : prefillLengths) if (length >= n) return length;
        return prefillLength();
    }

    public int maxLength() {
        return maxLength;
    }

    /** Greedy tokens after {@code embeds} [n, D] until {@code maxNewTokens}, no EOS. */
    public Generation generate(Tensor embeds, int maxNewTokens) throws ArtifactException {
        return generate(embeds, maxNewTokens, Set.of(), null);
    }

    /**
     * Greedy tokens after {@code embeds} [n, D] until {@code maxNewTokens} or one of {@code eosTokens} (included);
     * {@code onToken} (may be null) sees each token as it comes. Refused before any model call when n is 0 or above
     * P, {@code maxNewTokens} below 1, or n + maxNewTokens - 1 above L.
     */
    public Generation generate(Tensor embeds, int maxNewTokens, Set<Integer> eosTokens, IntConsumer onToken)
            throws ArtifactException {
        long start = System.nanoTime();
        int[] shape = embeds.shape();
        int n = shape.length > 0 ? shape[0] : 0;
        int width = shape.length > 0 ? shape[shape.length - 1] : 0;
        if (n > prefillLength()) {
            throw new ArtifactException("the prompt is " + n + " tokens (visual tokens included), longer than the "
                    + "exported prefill length " + prefillLength() + ": shorten the prompt or re-export with a longer prefill");
        }
        if (n < 1 || maxNewTokens < 1) {
            throw new ArtifactException("nothing to generate from " + n + " prompt tokens and " + maxNewTokens
                    + " new tokens: pass both >= 1");
        }
        if (n + maxNewTokens - 1 > maxLength) {
            throw new ArtifactException(n + " prompt tokens + " + maxNewTokens + " new tokens exceed the KV cache of "
                    + maxLength + ": pass maxNewTokens " + (maxLength - n + 1) + " or less");
        }
        int length = prefillLengthFor(n);
        float[] padded = new float[length * width];
        float[] values = embeds.floats();
        System.arraycopy(values, 0, padded, 0, values.length);
        Output<C> output = prefill.run(Tensor.ofFloats(new int[] {1, length, width}, padded), n - 1, length);
        float[] firstLogits = row(output.logits());
        List<Integer> tokens = new ArrayList<>();
        tokens.add(argmax(firstLogits));
        double ttft = (System.nanoTime() - start) / 1e9;
        if (onToken != null) onToken.accept(tokens.get(0));
        List<Double> stepTimes = new ArrayList<>();
        while (tokens.size() < maxNewTokens && !eosTokens.contains(tokens.get(tokens.size() - 1))) {
            long step = System.nanoTime();
            int last = tokens.get(tokens.size() - 1);
            Tensor input = Tensor.ofFloats(new int[] {1, 1, width}, Prompt.embeddingRow(embedding, last, width));
            output = decode.run(input, n + tokens.size() - 1, output.caches());
            int next = argmax(row(output.logits()));
            tokens.add(next);
            stepTimes.add((System.nanoTime() - step) / 1e9);
            if (onToken != null) onToken.accept(next);
        }
        int[] ids = new int[tokens.size()];
        for (int i = 0; i < ids.length; i++) ids[i] = tokens.get(i);
        double[] steps = new double[stepTimes.size()];
        for (int i = 0; i < steps.length; i++) steps[i] = stepTimes.get(i);
        return new Generation(ids, firstLogits, n, length, ttft, steps);
    }

    /** The first row [V] of logits [1, V]. */
    private static float[] row(Tensor logits) {
        int[] shape = logits.shape();
        float[] values = logits.floats();
        return Arrays.copyOf(values, Math.min(values.length, shape.length > 0 ? shape[shape.length - 1] : 0));
    }

    /** Index of the first maximum; the first NaN wins (numpy's argmax). */
    static int argmax(float[] values) {
        int best = 0;
        for (int i = 0; i < values.length; i++) {
            if (Float.isNaN(values[i])) return i;
            if (values[i] > values[best]) best = i;
        }
        return best;
    }
}
