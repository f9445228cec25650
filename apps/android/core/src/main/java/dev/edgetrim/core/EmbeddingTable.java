package dev.edgetrim.core;

import java.io.IOException;
import java.util.Arrays;
import java.util.Map;

/**
 * The token-embedding table [V, D] of a language-model or vlm artifact (the {@code embedding} data file),
 * memory-mapped; {@link #row} widens one looked-up row to float32 (Python's {@code edgetrim.runtime.embedding}).
 *
 * <p>Stored as the manifest's {@code llm.embedding_dtype} says: float32, float16, or int8 with one float32 scale per
 * row in the {@code embedding_scales} file [V] (symmetric: row = q * scale); int8_block (quantized ONNX, the LM head
 * tied to the table): {@code q + 128} in uint8 [V, D] with one float32 scale per block of D / G values in the
 * {@code embedding_scales} file [V, G] (row block j = (u - 128) * scales[j]), the very bytes the head chunk's
 * MatMulNBits reads as its weight. Only the rows looked up are dequantized.
 */
public final class EmbeddingTable implements Prompt.Embedding {
    /** .npy dtype of each {@code llm.embedding_dtype}. */
    private static final Map<String, String> DESCRS = Map.of(
            Contract.EMBEDDING_FLOAT32, "<f4", Contract.EMBEDDING_FLOAT16, "<f2", Contract.EMBEDDING_INT8, "|i1",
            Contract.EMBEDDING_INT8_BLOCK, "|u1");

    private final Npy values;
    private final float[] scales;  // [V] of an int8 table, [V, G] of an int8_block one, null for a float one
    private final int scalesPerRow;  // 1 (int8), G (int8_block), 0 (float)

    /**
     * {@code values} [V, D] float32 / float16; int8 with {@code scales} [V] float32; or uint8 ({@code q + 128}) with
     * {@code scales} [V, G] float32, G dividing D (null for a float table).
     */
    public EmbeddingTable(Npy values, Npy scales) throws ArtifactException {
        int[] shape = values.shape();
        if (shape.length != 2) {
            throw new ArtifactException("the embedding table has shape " + Arrays.toString(shape)
                    + ", not [V, D]: re-export the artifact");
        }
        boolean int8 = "|i1".equals(values.dtype());
        boolean quantized = int8 || "|u1".equals(values.dtype());
        if (quantized != (scales != null)) {
            throw new ArtifactException("the embedding table is " + values.dtype()
                    + (scales == null ? " without " : " with ") + Contract.EMBEDDING_SCALES
                    + ": int8 tables (and only they) need their scales, re-export the artifact");
        }
        int perRow = 0;
        if (scales != null) {
            int[] s = scales.shape();
            boolean fits;
            String wanted;
            if (int8) {
                perRow = 1;
                fits = Arrays.equals(s, new int[] {shape[0]});
                wanted = "[" + shape[0] + "] (one scale per row of the table)";
            } else {
                perRow = s.length == 2 ? s[1] : 0;
                fits = s.length == 2 && s[0] == shape[0] && perRow > 0 && shape[1] % perRow == 0;
                wanted = "[" + shape[0] + ", G] with G dividing " + shape[1] + " (one scale per block of each row)";
            }
            if (!"<f4".equals(scales.dtype()) || !fits) {
                throw new ArtifactException(Contract.EMBEDDING_SCALES + " is " + scales.dtype() + " "
                        + Arrays.toString(s) + ", not float32 " + wanted + ": re-export the artifact");
            }
        }
        this.values = values;
        this.scales = scales == null ? null : scales.floats();
        this.scalesPerRow = perRow;
    }

    /**
     * The artifact's table, as its manifest's {@code llm.embedding_dtype} says ({@link Manifest#parse} refuses an int8
     * table that lists no {@code embedding_scales} file).
     */
    public static EmbeddingTable open(Artifact artifact) throws IOException, ArtifactException {
        Manifest.LLM llm = artifact.manifest().llm();
        String dtype = llm == null ? null : llm.embeddingDtype();
        Npy values = Npy.read(artifact.dataFile(Contract.EMBEDDING));
        if (!values.dtype().equals(DESCRS.get(dtype))) {
            throw new ArtifactException("the embedding table is " + values.dtype() + ", the manifest says " + dtype
                    + ": re-export the artifact");
        }
        if (!Contract.EMBEDDING_INT8.equals(dtype) && !Contract.EMBEDDING_INT8_BLOCK.equals(dtype)) {
            return new EmbeddingTable(values, null);
        }
        return new EmbeddingTable(values, Npy.read(artifact.dataFile(Contract.EMBEDDING_SCALES)));
    }

    /** Row {@code id} [D] as float32 (an int8 row times its scale; an int8_block row less 128, times its blocks'). */
    @Override
    public float[] row(int id) throws ArtifactException {
        float[] row = values.row(id);
        if (scales == null) return row;
        if (scalesPerRow == 1) {
            float scale = scales[id];
            for (int i = 0; i < row.length; i++) row[i] *= scale;
            return row;
        }
        int block = row.length / scalesPerRow;
        for (int i = 0; i < row.length; i++) {
            row[i] = (row[i] - Contract.EMBEDDING_ZERO_POINT) * scales[id * scalesPerRow + i / block];
        }
        return row;
    }
}
