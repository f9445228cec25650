package dev.edgetrim.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.edgetrim.core.Overlay.KeptCell;
import java.util.ArrayList;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

public class OverlayTest {
    /** Every case of overlay.json: positions -> (partition, row, col) and the count kept per partition. */
    @Test
    public void conformanceVectors() throws Exception {
        JSONArray cases = new JSONArray(Vectors.text("overlay.json"));
        assertTrue(cases.length() > 0);
        int consumed = 0;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            int side = c.getInt("side");
            JSONArray positions = c.getJSONArray("positions");
            List<Integer> flat = new ArrayList<>();
            for (int k = 0; k < positions.length(); k++) flat.add(positions.getInt(k));
            List<KeptCell> cells = Overlay.keptCells(flat, side);
            JSONArray want = c.getJSONArray("cells");
            List<KeptCell> expected = new ArrayList<>();
            for (int k = 0; k < want.length(); k++) {
                JSONArray cell = want.getJSONArray(k);
                expected.add(new KeptCell(cell.getInt(0), cell.getInt(1), cell.getInt(2)));
            }
            assertEquals("side " + side, expected, cells);
            JSONArray kept = c.getJSONArray("kept");
            int[] counts = new int[kept.length()];
            for (int k = 0; k < counts.length; k++) counts[k] = kept.getInt(k);
            assertArrayEquals("side " + side, counts, Overlay.keptCounts(cells, c.getInt("partitions")));
            consumed++;
        }
        assertEquals(cases.length(), consumed);
    }

    @Test
    public void mapping() {
        List<KeptCell> cells = Overlay.keptCells(List.of(0, 5, 9, 17), 3);
        assertEquals(List.of(new KeptCell(0, 0, 0), new KeptCell(0, 1, 2), new KeptCell(1, 0, 0), new KeptCell(1, 2, 2)),
                cells);
        assertArrayEquals(new int[] {2, 2, 0}, Overlay.keptCounts(cells, 3));
    }
}
