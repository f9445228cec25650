package dev.edgetrim.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

/** MemoryPlanner against every case of apps/conformance/planner.json. */
public class MemoryPlannerTest {
    @Test
    public void everyPlannerCase() throws Exception {
        JSONArray cases = new JSONArray(Vectors.text("planner.json"));
        assertTrue(cases.length() > 0);
        int refused = 0;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject vector = cases.getJSONObject(i);
            JSONArray rawSizes = vector.getJSONArray("chunk_bytes");
            long[] sizes = new long[rawSizes.length()];
            for (int j = 0; j < sizes.length; j++) sizes[j] = rawSizes.getLong(j);
            Double budget = vector.isNull("budget_mb") ? null : vector.getDouble("budget_mb");
            boolean overlap = vector.getBoolean("overlap");
            JSONObject expected = vector.getJSONObject("expected");
            String label = "case " + i + ": " + rawSizes + " @ " + budget + " MB";
            if (expected.optBoolean("refused")) {
                refused++;
                MemoryPlanException refusal = assertThrows(label, MemoryPlanException.class,
                        () -> MemoryPlanner.plan(sizes, budget, overlap, List.of()));
                assertEquals(label, expected.getDouble("minimum_mb"), refusal.minimumMB(), 0);
                assertTrue(label + ": " + refusal.getMessage(),
                        refusal.getMessage().endsWith("pass at least " + expected.get("minimum_mb")));
                continue;
            }
            MemoryPlan plan = MemoryPlanner.plan(sizes, budget, overlap, List.of());
            assertEquals(label, ints(expected.getJSONArray("resident")), plan.resident());
            assertEquals(label, ints(expected.getJSONArray("streamed")), plan.streamed());
            assertEquals(label, expected.getBoolean("overlap"), plan.overlap());
        }
        assertTrue("the vectors include refusals", refused > 0);
        assertFalse("the vectors include plans", refused == cases.length());
    }

    @Test
    public void budgetBytesTruncateAndTheRefusalNamesTheLargestChunk() throws Exception {
        assertEquals(Long.valueOf(104_857), MemoryPlanner.plan(new long[] {1}, 0.1, true, List.of()).budgetBytes());
        assertNull(MemoryPlanner.plan(new long[] {1}, null, true, List.of()).budgetBytes());
        MemoryPlanException refusal = assertThrows(MemoryPlanException.class,
                () -> MemoryPlanner.plan(new long[] {1 << 20, 3 << 20}, 2.0, true, List.of("a", "b")));
        assertEquals("memory_budget_mb 2 MB is smaller than the largest chunk (b, 3.0 MB): pass at least 3.0",
                refusal.getMessage());
        assertEquals(1.0, assertThrows(MemoryPlanException.class,
                () -> MemoryPlanner.plan(new long[] {1 << 20}, Double.NaN, true, List.of())).minimumMB(), 0);
        assertEquals(List.of(0), MemoryPlanner.plan(new long[] {1 << 20}, 1e300, true, List.of()).resident());
    }

    private static List<Integer> ints(JSONArray array) throws Exception {
        List<Integer> out = new ArrayList<>();
        for (int i = 0; i < array.length(); i++) out.add(array.getInt(i));
        return out;
    }
}
