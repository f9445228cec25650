package dev.edgetrim.core;

import java.util.Arrays;

/**
 * The text of a growing token sequence as deltas, like the Python VlmPipeline's {@code on_text}: each token re-decodes
 * all tokens so far ({@link Tokenizer#detokenize}) and yields what was appended to the text shown so far. Not
 * thread-safe: feed it from the decoding thread.
 */
public final class TextStream {
    private final Tokenizer tokenizer;
    private int[] tokens = new int[16];
    private int count;
    private String shown = "";

    public TextStream(Tokenizer tokenizer) {
        this.tokenizer = tokenizer;
    }

    /**
     * Adds a token: the text it appended (empty for a special token), or null when the text changed other than by
     * appending (a character completed after its partial UTF-8 sequence showed as U+FFFD); the next delta then
     * continues from the new text.
     */
    public String append(int token) {
        if (count == tokens.length) tokens = Arrays.copyOf(tokens, count * 2);
        tokens[count++] = token;
        String text = tokenizer.detokenize(Arrays.copyOf(tokens, count));
        String delta = text.startsWith(shown) ? text.substring(shown.length()) : null;
        shown = text;
        return delta;
    }
}
