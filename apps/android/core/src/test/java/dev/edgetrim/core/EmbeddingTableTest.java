package dev.edgetrim.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.junit.Test;

/**
 * embedding.json: an int8 table and its per-row scales -> the float32 rows (q * scale) of the ids; a manifest that says
 * int8 without listing the scales is refused when it is read.
 */
public class EmbeddingTableTest {
    private static float[] floats(JSONArray values) throws JSONException {
        float[] out = new float[values.length()];
        for (int i = 0; i < out.length; i++) out[i] = (float) values.getDouble(i);
        return out;
    }

    @Test
    public void int8RowsAreTheStoredValuesTimesTheirScale() throws Exception {
        JSONObject c = Vectors.json("embedding.json");
        Npy values = Npy.read(Vectors.path(c.getString("table")));
        Npy scales = Npy.read(Vectors.path(c.getString("scales")));
        assertEquals("|i1", values.dtype());
        JSONArray shape = c.getJSONArray("shape");
        assertArrayEquals(new int[] {shape.getInt(0), shape.getInt(1)}, values.shape());
        assertArrayEquals(floats(c.getJSONArray("values")), values.floats(), 0f);
        assertArrayEquals(floats(c.getJSONArray("scale_values")), scales.floats(), 0f);
        EmbeddingTable table = new EmbeddingTable(values, scales);
        JSONArray ids = c.getJSONArray("ids");
        JSONArray rows = c.getJSONArray("rows");
        assertEquals(ids.length(), rows.length());
        for (int i = 0; i < ids.length(); i++) {
            assertArrayEquals("row " + ids.getInt(i), floats(rows.getJSONArray(i)), table.row(ids.getInt(i)), 0f);
        }
        assertThrows(ArtifactException.class, () -> table.row(shape.getInt(0)));
    }

    /** The language-model manifest pointed at the vector files, its {@code embedding_dtype} and files as given. */
    private static Artifact artifact(String dtype, List<String> roles) throws Exception {
        JSONObject c = Vectors.json("embedding.json");
        JSONObject manifest = Vectors.json("manifests/language-model.json");
        manifest.getJSONObject("llm").put("embedding_dtype", dtype);
        JSONArray files = new JSONArray();
        for (String role : roles) {
            String path = c.getString(role.equals(Contract.EMBEDDING) ? "table" : "scales");
            files.put(new JSONObject().put("path", path).put("role", role).put("bytes", 0).put("sha256", "0"));
        }
        manifest.put("files", files);
        byte[] data = manifest.toString().getBytes(StandardCharsets.UTF_8);
        return new Artifact(Vectors.ROOT, Manifest.parse(data, "manifest.json"));
    }

    @Test
    public void anArtifactReadsItsInt8TableAndRefusesOneWithoutScales() throws Exception {
        List<String> both = List.of(Contract.EMBEDDING, Contract.EMBEDDING_SCALES);
        EmbeddingTable table = EmbeddingTable.open(artifact(Contract.EMBEDDING_INT8, both));
        JSONObject c = Vectors.json("embedding.json");
        assertArrayEquals(floats(c.getJSONArray("rows").getJSONArray(0)), table.row(c.getJSONArray("ids").getInt(0)), 0f);

        VerificationException missing = assertThrows(VerificationException.class,
                () -> artifact(Contract.EMBEDDING_INT8, List.of(Contract.EMBEDDING)));
        assertEquals(VerificationException.Reason.MANIFEST, missing.reason());
        assertTrue(missing.getMessage(), missing.getMessage().contains("lists no embedding_scales file"));
        ArtifactException mismatch = assertThrows(ArtifactException.class,
                () -> EmbeddingTable.open(artifact(Contract.EMBEDDING_FLOAT16, both)));
        assertTrue(mismatch.getMessage(), mismatch.getMessage().contains("the manifest says float16"));
        Npy values = Npy.read(Vectors.path(c.getString("table")));
        assertThrows(ArtifactException.class, () -> new EmbeddingTable(values, null));
        assertThrows(ArtifactException.class, () -> new EmbeddingTable(values, values));  // scales must be float32 [V]
    }

    /** embedding_block.json: an int8_block table (uint8 q + 128, a scale per block) -> (u - 128) * scale, exactly. */
    @Test
    public void int8BlockRowsAreTheStoredValuesLessTheZeroPointTimesTheirBlockScale() throws Exception {
        JSONObject c = Vectors.json("embedding_block.json");
        Npy values = Npy.read(Vectors.path(c.getString("table")));
        Npy scales = Npy.read(Vectors.path(c.getString("scales")));
        assertEquals("|u1", values.dtype());
        JSONArray shape = c.getJSONArray("shape");
        JSONArray scalesShape = c.getJSONArray("scales_shape");
        assertArrayEquals(new int[] {shape.getInt(0), shape.getInt(1)}, values.shape());
        assertArrayEquals(new int[] {scalesShape.getInt(0), scalesShape.getInt(1)}, scales.shape());
        assertArrayEquals(floats(c.getJSONArray("values")), values.floats(), 0f);
        assertArrayEquals(floats(c.getJSONArray("scale_values")), scales.floats(), 0f);
        assertEquals(Contract.EMBEDDING_ZERO_POINT, c.getInt("zero_point"));
        EmbeddingTable table = new EmbeddingTable(values, scales);
        JSONArray ids = c.getJSONArray("ids");
        JSONArray rows = c.getJSONArray("rows");
        assertEquals(ids.length(), rows.length());
        for (int i = 0; i < ids.length(); i++) {
            assertArrayEquals("row " + ids.getInt(i), floats(rows.getJSONArray(i)), table.row(ids.getInt(i)), 0f);
        }
        assertThrows(ArtifactException.class, () -> new EmbeddingTable(values, values));  // float32 [V, G]
        assertThrows(ArtifactException.class, () -> new EmbeddingTable(values, null));
    }

    /** manifests/language-model-tied.json (quantized ONNX, head tied to the table) reads its int8_block table. */
    @Test
    public void theTiedManifestReadsItsInt8BlockTable() throws Exception {
        JSONObject c = Vectors.json("embedding_block.json");
        JSONObject manifest = Vectors.json("manifests/language-model-tied.json");
        assertEquals(Contract.EMBEDDING_INT8_BLOCK, manifest.getJSONObject("llm").getString("embedding_dtype"));
        JSONArray files = new JSONArray();
        files.put(new JSONObject().put("path", c.getString("table")).put("role", Contract.EMBEDDING)
                .put("bytes", 0).put("sha256", "0"));
        files.put(new JSONObject().put("path", c.getString("scales")).put("role", Contract.EMBEDDING_SCALES)
                .put("bytes", 0).put("sha256", "0"));
        manifest.put("files", files);
        byte[] data = manifest.toString().getBytes(StandardCharsets.UTF_8);
        EmbeddingTable table = EmbeddingTable.open(new Artifact(Vectors.ROOT, Manifest.parse(data, "manifest.json")));
        assertArrayEquals(floats(c.getJSONArray("rows").getJSONArray(0)), table.row(c.getJSONArray("ids").getInt(0)), 0f);

        manifest.getJSONObject("llm").put("embedding_tied", "lm_tail");
        byte[] nowhere = manifest.toString().getBytes(StandardCharsets.UTF_8);
        VerificationException refused = assertThrows(VerificationException.class,
                () -> Manifest.parse(nowhere, "manifest.json"));
        assertEquals(VerificationException.Reason.MANIFEST, refused.reason());
        assertTrue(refused.getMessage(), refused.getMessage().contains("llm.embedding_tied names no chunk"));
    }

    /** The tied head's programs read the table files: the memory planner counts them with the head, as Python's. */
    @Test
    public void theMemoryPlannerCountsTheTiedTableWithTheHead() throws Exception {
        byte[] data = Vectors.json("manifests/language-model-tied.json").toString().getBytes(StandardCharsets.UTF_8);
        Manifest manifest = Manifest.parse(data, "manifest.json");
        Manifest.Chunk head = null;
        Manifest.Chunk other = null;
        for (Manifest.Chunk chunk : manifest.chunks()) {
            if (chunk.name().equals(manifest.llm().embeddingTied())) head = chunk;
            else other = chunk;
        }
        long table = 0;
        for (Manifest.FileEntry file : manifest.files()) {
            if (file.role().equals(Contract.EMBEDDING) || file.role().equals(Contract.EMBEDDING_SCALES)) table += file.bytes();
        }
        assertTrue(table > head.bytes());
        assertEquals(head.bytes() + table, manifest.weightBytes(head));
        assertEquals(other.bytes(), manifest.weightBytes(other));
        double tooSmall = (head.bytes() + table - 1) / (double) (1 << 20);
        Manifest.Chunk tied = head;
        assertThrows(MemoryPlanException.class, () -> MemoryPlanner.plan(List.of(tied), manifest, tooSmall, true));
    }
}
