package dev.edgetrim.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.junit.Test;

/** sampler.json: shift ratio and schedule, then sampling from a table of velocities (one per model evaluation). */
public final class SamplerTest {
    /** Each case of sampler.json; the top level is an array. */
    private static List<JSONObject> cases() throws IOException, JSONException {
        JSONArray array = new JSONArray(Vectors.text("sampler.json"));
        List<JSONObject> out = new ArrayList<>();
        for (int i = 0; i < array.length(); i++) out.add(array.getJSONObject(i));
        assertFalse("sampler.json has no cases", out.isEmpty());
        return out;
    }

    private static double[] doubles(JSONArray array) throws JSONException {
        double[] out = new double[array.length()];
        for (int i = 0; i < out.length; i++) out[i] = array.getDouble(i);
        return out;
    }

    private static float[] floats(JSONArray array) throws JSONException {
        float[] out = new float[array.length()];
        for (int i = 0; i < out.length; i++) out[i] = (float) array.getDouble(i);
        return out;
    }

    private static List<String> strings(JSONArray array) throws JSONException {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < array.length(); i++) out.add(array.getString(i));
        return out;
    }

    private static Integer optInt(JSONObject object, String key) throws JSONException {
        return object.isNull(key) ? null : object.getInt(key);
    }

    /** The largest |actual - expected|, after checking the counts and that it is within {@code absolute}. */
    private static double assertClose(double[] actual, double[] expected, double absolute, String name) {
        assertEquals(name + ": count", expected.length, actual.length);
        double max = 0;
        for (int i = 0; i < actual.length; i++) {
            double error = Math.abs(actual[i] - expected[i]);
            assertTrue(name + "[" + i + "]: " + actual[i] + " vs " + expected[i], error <= absolute);
            max = Math.max(max, error);
        }
        return max;
    }

    private static double[] widen(float[] values) {
        double[] out = new double[values.length];
        for (int i = 0; i < out.length; i++) out[i] = values[i];
        return out;
    }

    private static double[] unbox(List<Double> values) {
        return values.stream().mapToDouble(Double::doubleValue).toArray();
    }

    /** Float64 arithmetic as Python's: the ratio and the schedule are the same doubles. */
    @Test
    public void schedules() throws Exception {
        int consumed = 0;
        for (JSONObject c : cases()) {
            String name = c.getString("name");
            JSONArray pixels = c.getJSONArray("pixels");
            double ratio = Sampler.shiftRatio(pixels.getInt(0), pixels.getInt(1), pixels.getInt(2));
            assertEquals(name + ": shift ratio", c.getDouble("shift_ratio"), ratio, 0);
            double[] schedule = Sampler.timesteps(c.getInt("steps"), ratio);
            assertArrayEquals(name + ": schedule", doubles(c.getJSONArray("schedule")), schedule, 0);
            consumed++;
        }
        assertEquals(new JSONArray(Vectors.text("sampler.json")).length(), consumed);
    }

    @Test
    public void sampling() throws Exception {
        List<JSONObject> cases = cases();
        int consumed = 0;
        double maxLatentError = 0;
        double maxSimilarityError = 0;
        for (JSONObject c : cases) {
            String name = c.getString("name");
            JSONObject expected = c.getJSONObject("expected");
            JSONArray rows = c.getJSONArray("velocities");
            List<float[]> table = new ArrayList<>();
            for (int i = 0; i < rows.length(); i++) table.add(floats(rows.getJSONArray(i)));
            float[] noise = floats(c.getJSONArray("noise"));
            float[] noiseBefore = noise.clone();
            LeapRule rule = null;
            if (c.has("lpl")) {
                JSONObject lpl = c.getJSONObject("lpl");
                rule = new LeapRule(lpl.getInt("min_steps"), lpl.getInt("patience"), lpl.getDouble("threshold"));
            }
            List<Double> calledT = new ArrayList<>();
            List<String> calledFunctions = new ArrayList<>();
            double[] schedule = doubles(c.getJSONArray("schedule"));
            SampleResult result = Sampler.sample((z, t, function) -> {
                assertEquals(name, noise.length, z.length);
                calledT.add(t);
                calledFunctions.add(function);
                return table.get(calledT.size() - 1);
            }, noise, schedule, c.getInt("merge_steps"), optInt(c, "leap_at"), rule);

            maxLatentError = Math.max(maxLatentError, assertClose(widen(result.latent()),
                    doubles(expected.getJSONArray("latent")), 1e-5, name + ": latent"));
            assertEquals(name + ": steps run", expected.getInt("steps_run"), result.stepsRun());
            assertEquals(name + ": leap step", optInt(expected, "leap_step"), result.leapStep());
            assertEquals(name + ": functions", strings(expected.getJSONArray("functions")), result.functions());
            assertEquals(name + ": functions called", result.functions(), calledFunctions);
            assertArrayEquals(name + ": timesteps called", Arrays.copyOf(schedule, calledT.size()),
                    unbox(calledT), 0);
            assertEquals(name + ": step times", result.stepsRun(), result.stepMs().size());
            maxSimilarityError = Math.max(maxSimilarityError, assertClose(unbox(result.similarities()),
                    doubles(expected.getJSONArray("similarities")), 1e-12, name + ": similarities"));
            assertArrayEquals(name + ": the noise is left as it was", noiseBefore, noise, 0);
            consumed++;
        }
        assertEquals(new JSONArray(Vectors.text("sampler.json")).length(), consumed);
        System.out.println("  sampler.json: " + consumed + " cases, max latent error " + maxLatentError
                + ", max similarity error " + maxSimilarityError);
    }

    /** Python's integer division: frames / 17 * 5 (33 frames: 5), a single frame: 1. */
    @Test
    public void shiftRatioFrames() {
        assertEquals(Math.sqrt(5), Sampler.shiftRatio(512, 512, 33), 0);
        assertEquals(Math.sqrt(10), Sampler.shiftRatio(512, 512, 50), 0);
        assertEquals(Math.sqrt(0.5), Sampler.shiftRatio(256, 512, 1), 0);
        assertEquals(2.0, Sampler.shiftRatio(512, 512, 1, 256 * 256), 0);
    }

    /** An improvement must exceed best + threshold; an equal similarity stalls. The rule copies each velocity. */
    @Test
    public void leapRuleStalls() {
        LeapRule rule = new LeapRule(2, 1, 0);
        assertFalse(rule.observe(0, new float[] {1, 0}));
        assertFalse(rule.observe(1, new float[] {1, 0}));
        assertEquals(1.0, rule.best(), 0);
        assertEquals(0, rule.stalls());
        assertTrue(rule.observe(2, new float[] {2, 0}));
        assertEquals(1, rule.stalls());
        assertEquals(List.of(1.0, 1.0), rule.history());

        float[] buffer = {3, 4};  // a model reusing its output array: the rule keeps a copy
        LeapRule reused = new LeapRule();
        reused.observe(0, buffer);
        buffer[0] = 4;
        buffer[1] = -3;
        reused.observe(1, buffer);
        assertEquals(List.of(0.0), reused.history());
    }

    /** An adaptive leap at the last step is no leap: all steps ran. */
    @Test
    public void adaptiveLeapAtLastStep() throws Exception {
        SampleResult result = Sampler.sample((z, t, function) -> new float[] {1}, new float[] {0},
                new double[] {1000, 500}, 0, null, new LeapRule(0, 0, 1e-3));
        assertEquals(Integer.valueOf(0), result.leapStep());
        result = Sampler.sample((z, t, function) -> new float[] {1}, new float[] {0}, new double[] {1000}, 0, null,
                new LeapRule(0, 0, 1e-3));
        assertNull(result.leapStep());
        assertEquals(1, result.stepsRun());
        assertArrayEquals(new float[] {1}, result.latent(), 0);
    }

    /** A fixed leap wins over an adaptive rule, which still records its similarities. */
    @Test
    public void fixedLeapWithRule() throws Exception {
        float[][] velocities = {{1, 0}, {0, 1}, {1, 1}, {1, 0}};
        int[] step = {0};
        SampleResult result = Sampler.sample((z, t, function) -> velocities[step[0]++], new float[] {0, 0},
                new double[] {1000, 750, 500, 250}, 0, 2, new LeapRule(0, 0, 1e-3));
        assertEquals(Integer.valueOf(2), result.leapStep());
        assertEquals(2, result.similarities().size());
        assertArrayEquals(new float[] {0.25f + 0.5f, 0.25f + 0.5f}, result.latent(), 0);
    }

    @Test
    public void planRefusals() throws Exception {
        assertRefused(0, 0, null, "steps 0 must be at least 1");
        assertRefused(6, 7, null, "mergeSteps 7 is outside 0...6");
        assertRefused(6, -1, null, "mergeSteps -1 is outside 0...6");
        assertRefused(6, 0, 0, "leapAt 0 is outside 1...5");
        assertRefused(6, 0, 6, "leapAt 6 is outside 1...5");
        Sampler.checkPlan(6, 6, 5);
        Sampler.checkPlan(6, 0, 1);
        Sampler.checkPlan(1, 1, null);
        try {
            Sampler.sample((z, t, function) -> new float[] {0}, new float[] {0, 0}, new double[] {1000});
            fail("a velocity of 1 value for a latent of 2 was accepted");
        } catch (SamplerException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("the velocity has 1 values, the latent 2"));
        }
        int[] calls = {0};
        try {
            Sampler.sample((z, t, function) -> {
                calls[0]++;
                return z;
            }, new float[] {0}, new double[] {1000, 500}, 0, 2, null);
            fail("leapAt 2 of 2 steps was accepted");
        } catch (SamplerException e) {
            assertEquals("the plan is checked before the first evaluation", 0, calls[0]);
        }
    }

    private static void assertRefused(int numSteps, int mergeSteps, Integer leapAt, String message) {
        try {
            Sampler.checkPlan(numSteps, mergeSteps, leapAt);
            fail("accepted steps " + numSteps + ", mergeSteps " + mergeSteps + ", leapAt " + leapAt);
        } catch (SamplerException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith(message));
        }
    }

    @Test
    public void guidance() {
        assertArrayEquals(new float[] {16, -13}, Sampler.guided(new float[] {1, 2}, new float[] {3, 0}, 7.5), 0);
        try {
            Sampler.guided(new float[] {1, 2}, new float[] {3}, 7.5);
            fail("halves of different lengths were accepted");
        } catch (IllegalArgumentException expected) {
            // refused
        }
    }

    /**
     * Each evaluation sees the latent so far (a new array; the noise itself first), progress sees each step, the
     * timesteps scale by {@code numTimesteps}, and the caller's rule is left as it was.
     */
    @Test
    public void latentProgressAndRule() throws Exception {
        float[] noise = {1, -2};
        List<float[]> seen = new ArrayList<>();
        List<Integer> progress = new ArrayList<>();
        LeapRule rule = new LeapRule(1, 0, 1e-3);
        SampleResult result = Sampler.sample((z, t, function) -> {
            seen.add(z);
            return new float[] {3, 4};
        }, noise, new double[] {1, 0.5, 0.25}, 1, null, rule, 1, progress::add);
        // step 0 (tdtm): + v * 0.5; step 1 leaps (stalls 1 >= 0, step >= 1): + v * 0.5
        assertEquals(List.of(0, 1), progress);
        assertEquals(List.of(Contract.TDTM, Contract.PLAIN), result.functions());
        assertEquals(Integer.valueOf(1), result.leapStep());
        assertEquals(List.of(1.0), result.similarities());
        assertTrue(seen.get(0) == noise);
        assertArrayEquals(new float[] {2.5f, 0}, seen.get(1), 0);
        assertArrayEquals(new float[] {4, 2}, result.latent(), 0);
        assertArrayEquals(new float[] {1, -2}, noise, 0);
        assertEquals(List.of(), rule.history());
        assertEquals(0, rule.stalls());
        assertEquals(Double.NEGATIVE_INFINITY, rule.best(), 0);
    }

    /** A video denoiser's schedule: its pixel size, frames and base resolution (64 x 64, 17 frames: r = sqrt(5) / 8). */
    @Test
    public void scheduleOfManifest() throws Exception {
        Manifest.Video video = Manifest.parse(Vectors.bytes("manifests/video-denoiser.json"), "video-denoiser.json")
                .video();
        assertArrayEquals(Sampler.timesteps(30, Math.sqrt(5) / 8), Sampler.schedule(video, 30), 0);
        Manifest.Scheduler s = video.scheduler();
        Manifest.Video smallBase = new Manifest.Video(video.latentShape(), video.batch(), video.inChannels(),
                video.outChannels(), video.frames(), video.tokensPerFrame(), video.pixelSize(), video.pixelFrames(),
                video.captionLength(), video.captionChannels(), video.depth(), video.variants(), video.nullCaption(),
                video.flops(), new Manifest.Scheduler(s.numSteps(), s.cfgScale(), 64 * 64, s.mergeSteps(), s.leapAt()));
        assertArrayEquals(Sampler.timesteps(30, Math.sqrt(5)), Sampler.schedule(smallBase, 30), 0);
    }
}
