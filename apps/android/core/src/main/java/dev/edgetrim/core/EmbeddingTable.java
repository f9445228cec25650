package dev.edgetrim.core;

import java.io.IOException;
import java.util.Arrays;
import java.util.Map;

/**
 * The token-embedding table [V, D] of a language-model or vlm artifact (the {@code embedding} data file),
 * memory-mapped; {@link #row} widens one looked-up row to float32 (Python's {@code edgetrim.runtime.embedding}).
 *
 * <p>Stored as the manifest's {@code llm.embedding_dtype} says: float32, float16, or int8 with one float32 scale per
 * row in the {@code embedding_scales} file [V] (symmetric: row = q * scale). Only the rows looked up are dequantized.
 */
public final class EmbeddingTable implements Prompt.Embedding {
    /** .npy dtype of each {@code llm.embedding_dtype}. */
    private static final Map<String, String> DESCRS = Map.of(
            Contract.EMBEDDING_FLOAT32, "<f4", Contract.EMBEDDING_FLOAT16, "<f2", Contract.EMBEDDING_INT8, "|i1");

    private final Npy values;
    private final float[] scales;  // [V] of an int8 table, null for a float one

    /** {@code values} [V, D] float32 / float16, or int8 with {@code scales} [V] float32 (null for a float table). */
    public EmbeddingTable(Npy values, Npy scales) throws ArtifactException {
        int[] shape = values.shape();
        if (shape.length != 2) {
            throw new ArtifactException("the embedding table has shape " + Arrays.toString(shape)
                    + ", not [V, D]: re-export the artifact");
        }
        if ("|i1".equals(values.dtype()) != (scales != null)) {
            throw new ArtifactException("the embedding table is " + values.dtype()
                    + (scales == null ? " without " : " with ") + Contract.EMBEDDING_SCALES
                    + ": int8 tables (and only they) need their per-row scales, re-export the artifact");
        }
        if (scales != null
                && (!"<f4".equals(scales.dtype()) || !Arrays.equals(scales.shape(), new int[] {shape[0]}))) {
            throw new ArtifactException(Contract.EMBEDDING_SCALES + " is " + scales.dtype() + " "
                    + Arrays.toString(scales.shape()) + ", not float32 [" + shape[0]
                    + "] (one scale per row of the table): re-export the artifact");
        }
        this.values = values;
        this.scales = scales == null ? null : scales.floats();
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
        if (!Contract.EMBEDDING_INT8.equals(dtype)) return new EmbeddingTable(values, null);
        return new EmbeddingTable(values, Npy.read(artifact.dataFile(Contract.EMBEDDING_SCALES)));
    }

    /** Row {@code id} [D] as float32 (an int8 row times its scale). */
    @Override
    public float[] row(int id) throws ArtifactException {
        float[] row = values.row(id);
        if (scales != null) {
            float scale = scales[id];
            for (int i = 0; i < row.length; i++) row[i] *= scale;
        }
        return row;
    }
}
