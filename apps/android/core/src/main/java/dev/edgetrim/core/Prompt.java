package dev.edgetrim.core;

import java.util.ArrayList;
import java.util.List;
import org.json.JSONObject;

/**
 * A VLM prompt template: {@code <image>} marks where the K visual tokens go, {@code {prompt}} the user's text, each
 * exactly once (e.g. {@code USER: <image>\n{prompt} ASSISTANT:}). {@link #ids} fills it into token ids with one image
 * token; {@link #spliceVisual} replaces that token's embedding by the K visual rows.
 */
public final class Prompt {
    public static final String IMAGE_TOKEN = Contract.IMAGE_TOKEN;
    public static final String PROMPT_FIELD = Contract.PROMPT_FIELD;

    /** A token's row [D] of the token-embedding table [V, D]. */
    @FunctionalInterface
    public interface Embedding {
        float[] row(int id) throws ArtifactException;
    }

    private final String template;

    public Prompt(String template) throws ArtifactException {
        if (count(template, IMAGE_TOKEN) != 1 || count(template, PROMPT_FIELD) != 1) {
            throw new ArtifactException("the prompt template " + JSONObject.quote(template) + " must contain "
                    + IMAGE_TOKEN + " and " + PROMPT_FIELD + " exactly once, e.g. 'USER: <image>\\n{prompt} ASSISTANT:'");
        }
        this.template = template;
    }

    public String template() {
        return template;
    }

    /**
     * Token ids of the filled template with one {@code imageTokenId} at the placeholder. The text before the
     * placeholder is encoded with the tokenizer's special tokens (e.g. BOS), the text after without, so the placeholder
     * never merges with its neighbours. Refused when the prompt itself holds {@code <image>}.
     */
    public int[] ids(String prompt, int imageTokenId, Tokenizer tokenizer) throws ArtifactException {
        String filled = template.replace(PROMPT_FIELD, prompt);
        if (count(filled, IMAGE_TOKEN) != 1) {
            throw new ArtifactException("the prompt contains " + IMAGE_TOKEN + ": remove it, the template places the image");
        }
        int at = filled.indexOf(IMAGE_TOKEN);
        int[] before = tokenizer.encode(filled.substring(0, at), true);
        int[] after = tokenizer.encode(filled.substring(at + IMAGE_TOKEN.length()), false);
        int[] ids = new int[before.length + 1 + after.length];
        System.arraycopy(before, 0, ids, 0, before.length);
        ids[before.length] = imageTokenId;
        System.arraycopy(after, 0, ids, before.length + 1, after.length);
        return ids;
    }

    /**
     * Prompt ids -> embeddings [n, D], the one {@code imageTokenId} replaced by the K rows of {@code visual} ([K, D] or
     * [1, K, D]). Ids that already hold K consecutive placeholders (a processor that expanded them) are replaced in
     * order. Refused for any other number of placeholders, or an embedding row that is not [D].
     */
    public static Tensor spliceVisual(int[] ids, Tensor visual, int imageTokenId, Embedding embedding)
            throws ArtifactException {
        int[] shape = visual.shape();
        int width = shape.length > 0 ? shape[shape.length - 1] : 0;
        float[] rows = visual.floats();
        int count = width > 0 ? rows.length / width : 0;
        List<Integer> slots = new ArrayList<>();
        for (int i = 0; i < ids.length; i++) if (ids[i] == imageTokenId) slots.add(i);
        boolean replaced = !slots.isEmpty() && slots.size() == count
                && slots.get(slots.size() - 1) - slots.get(0) + 1 == count;
        if (!replaced && slots.size() != 1) {
            throw new ArtifactException("the prompt has " + slots.size() + " image placeholders (id " + imageTokenId
                    + "); it needs exactly one (or " + count + ", one per visual token): put the image token once in "
                    + "the prompt template");
        }
        int n = replaced ? ids.length : ids.length - 1 + count;
        float[] values = new float[n * width];
        int offset = 0;
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] != imageTokenId) {
                System.arraycopy(embeddingRow(embedding, ids[i], width), 0, values, offset, width);
                offset += width;
            } else if (replaced) {
                System.arraycopy(rows, (i - slots.get(0)) * width, values, offset, width);
                offset += width;
            } else {
                System.arraycopy(rows, 0, values, offset, count * width);
                offset += count * width;
            }
        }
        return Tensor.ofFloats(new int[] {n, width}, values);
    }

    /** {@code embedding.row(id)}, checked to be [width]. */
    static float[] embeddingRow(Embedding embedding, int id, int width) throws ArtifactException {
        float[] row = embedding.row(id);
        if (row.length != width) {
            throw new ArtifactException("the embedding row of token " + id + " has " + row.length + " values, not "
                    + width + " (the model's width D)");
        }
        return row;
    }

    /** Non-overlapping occurrences of {@code part} in {@code text}. */
    private static int count(String text, String part) {
        int count = 0;
        for (int at = text.indexOf(part); at >= 0; at = text.indexOf(part, at + part.length())) count++;
        return count;
    }
}
