package dev.edgetrim.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

/**
 * The prompt vectors of tokenizer/cases.json, the visual splice, the text stream and greedy decoding over fake models
 * (mirrors EdgetrimKit's PromptTests).
 */
public final class PromptTest {
    @Test
    public void promptVectors() throws Exception {
        Tokenizer tokenizer = TokenizerTest.tokenizer();
        JSONArray cases = TokenizerTest.cases("prompts");
        int checked = 0;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            Prompt template = new Prompt(c.getString("template"));
            String prompt = c.getString("prompt");
            assertArrayEquals(JSONObject.quote(prompt), TokenizerTest.ints(c.getJSONArray("ids")),
                    template.ids(prompt, c.getInt("image_token_id"), tokenizer));
            checked++;
        }
        assertEquals(6, checked);
        assertEquals(cases.length(), checked);
    }

    @Test
    public void templateRefusals() throws Exception {
        for (String template : List.of("USER: {prompt}", "<image> <image> {prompt}", "<image>", "<image> {prompt}{prompt}")) {
            try {
                new Prompt(template);
                fail("accepted the template " + template);
            } catch (ArtifactException e) {
                assertTrue(e.getMessage(), e.getMessage().contains("exactly once"));
            }
        }
        Prompt template = new Prompt("USER: <image>\n{prompt} ASSISTANT:");
        try {
            template.ids("two <image>", 3, TokenizerTest.tokenizer());
            fail("accepted a prompt holding <image>");
        } catch (ArtifactException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("the prompt contains <image>"));
        }
        assertEquals(56, template.ids("{prompt}", 3, TokenizerTest.tokenizer())[0]);
    }

    /** Row i of the fake embedding table is [i, i + 0.5]. */
    static float[] embedding(int id) {
        return new float[] {id, id + 0.5f};
    }

    @Test
    public void spliceOnePlaceholder() throws Exception {
        Tensor visual = Tensor.ofFloats(new int[] {1, 3, 2}, new float[] {-1, -1, -2, -2, -3, -3});
        Tensor embeds = Prompt.spliceVisual(new int[] {7, 3, 8}, visual, 3, PromptTest::embedding);
        assertArrayEquals(new int[] {5, 2}, embeds.shape());
        assertArrayEquals(new float[] {7, 7.5f, -1, -1, -2, -2, -3, -3, 8, 8.5f}, embeds.floats(), 0);
    }

    @Test
    public void spliceExpandedPlaceholders() throws Exception {
        Tensor visual = Tensor.ofFloats(new int[] {2, 2}, new float[] {-1, -1, -2, -2});
        Tensor embeds = Prompt.spliceVisual(new int[] {7, 3, 3, 8}, visual, 3, PromptTest::embedding);
        assertArrayEquals(new int[] {4, 2}, embeds.shape());
        assertArrayEquals(new float[] {7, 7.5f, -1, -1, -2, -2, 8, 8.5f}, embeds.floats(), 0);
        assertSpliceRefused(new int[] {3, 7, 3}, visual, PromptTest::embedding, "2 image placeholders");
        assertSpliceRefused(new int[] {7, 8}, visual, PromptTest::embedding, "0 image placeholders");
        assertSpliceRefused(new int[] {7, 3}, visual, id -> new float[] {0}, "1 values, not 2");
    }

    private static void assertSpliceRefused(int[] ids, Tensor visual, Prompt.Embedding embedding, String words) {
        try {
            Prompt.spliceVisual(ids, visual, 3, embedding);
            fail("spliced " + Arrays.toString(ids));
        } catch (ArtifactException e) {
            assertTrue(e.getMessage(), e.getMessage().contains(words));
        }
    }

    /** Python's on_text: a partial UTF-8 character shows as U+FFFD, and the text that completes it is not appended. */
    @Test
    public void textStream() throws Exception {
        TextStream stream = new TextStream(TokenizerTest.tokenizer());
        List<String> deltas = new ArrayList<>();
        for (int token : new int[] {75, 131, 106, 79, 600, 2, 224}) deltas.add(stream.append(token));
        assertEquals(Arrays.asList("h", "\uFFFD", null, "l", "<id:600>", "", " "), deltas);
    }

    /** A fake model whose logits pick {@code script[k]} at step k; records what it was fed. */
    static final class Fake {
        final int[] script;
        final int vocab;
        final List<Tensor> embeds = new ArrayList<>();
        final List<Integer> lastIndex = new ArrayList<>();
        final List<Integer> lengths = new ArrayList<>();
        final List<Integer> positions = new ArrayList<>();
        final List<Integer> caches = new ArrayList<>();

        Fake(int... script) {
            this.script = script;
            this.vocab = 10;
        }

        Tensor logits(int step) {
            float[] row = new float[vocab];
            row[script[step]] = 1;
            return Tensor.ofFloats(new int[] {1, vocab}, row);
        }

        GreedyDecoder<Integer> decoder() {
            return decoder(List.of(4), 6);
        }

        GreedyDecoder<Integer> decoder(List<Integer> prefillLengths, int maxLength) {
            return new GreedyDecoder<>(prefillLengths, maxLength, PromptTest::embedding,
                    (embeds, last, length) -> {
                        this.embeds.add(embeds);
                        lastIndex.add(last);
                        lengths.add(length);
                        return new GreedyDecoder.Output<>(logits(0), 100);
                    },
                    (row, position, cache) -> {
                        embeds.add(row);
                        positions.add(position);
                        caches.add(cache);
                        return new GreedyDecoder.Output<>(logits(positions.size()), cache + 1);
                    });
        }
    }

    static final Tensor PROMPT = Tensor.ofFloats(new int[] {2, 2}, new float[] {1, 2, 3, 4});

    @Test
    public void greedyDecoding() throws Exception {
        Fake fake = new Fake(5, 6, 7, 8);
        List<Integer> seen = new ArrayList<>();
        GreedyDecoder.Generation generation = fake.decoder().generate(PROMPT, 4, Set.of(), seen::add);
        assertArrayEquals(new int[] {5, 6, 7, 8}, generation.tokens());
        assertEquals(List.of(5, 6, 7, 8), seen);
        assertEquals(2, generation.promptTokens());
        assertArrayEquals(fake.logits(0).floats(), generation.firstLogits(), 0);
        assertEquals(3, generation.stepTimes().length);
        assertTrue(generation.ttft() >= 0);
        assertTrue(generation.decodeTime() >= 0);
        assertEquals(Tensor.ofFloats(new int[] {1, 4, 2}, new float[] {1, 2, 3, 4, 0, 0, 0, 0}), fake.embeds.get(0));
        assertEquals(List.of(1), fake.lastIndex);
        assertEquals(List.of(4), fake.lengths);
        assertEquals(4, generation.prefillLength());
        assertEquals(List.of(2, 3, 4), fake.positions);
        assertEquals(List.of(100, 101, 102), fake.caches);
        assertEquals(Tensor.ofFloats(new int[] {1, 1, 2}, new float[] {5, 5.5f}), fake.embeds.get(1));
        assertEquals(Tensor.ofFloats(new int[] {1, 1, 2}, new float[] {6, 6.5f}), fake.embeds.get(2));
        assertEquals(Tensor.ofFloats(new int[] {1, 1, 2}, new float[] {7, 7.5f}), fake.embeds.get(3));
        assertEquals(4, fake.embeds.size());
    }

    @Test
    public void stopsAtEos() throws Exception {
        Fake fake = new Fake(5, 2, 7, 8);
        GreedyDecoder.Generation generation = fake.decoder().generate(PROMPT, 4, Set.of(2, 0), null);
        assertArrayEquals(new int[] {5, 2}, generation.tokens());
        assertEquals(List.of(2), fake.positions);
        assertArrayEquals(new int[] {2}, new Fake(2).decoder().generate(PROMPT, 4, Set.of(2), null).tokens());
        assertArrayEquals(new int[] {5, 2, 7, 8}, new Fake(5, 2, 7, 8).decoder().generate(PROMPT, 4).tokens());
    }

    @Test
    public void argmaxTiesAndNaN() throws Exception {
        GreedyDecoder<Integer> decoder = new GreedyDecoder<>(List.of(2), 3, PromptTest::embedding,
                (embeds, last, length) -> new GreedyDecoder.Output<>(Tensor.ofFloats(new int[] {1, 4}, new float[] {0, 3, 3, 1}), 0),
                (row, position, caches) -> new GreedyDecoder.Output<>(
                        Tensor.ofFloats(new int[] {1, 4}, new float[] {0, 1, Float.NaN, 5}), 0));
        assertArrayEquals(new int[] {1, 2}, decoder.generate(PROMPT, 2).tokens());
    }

    /**
     * The language-model vector's prefill lengths: a prompt pads to the smallest that holds it (at, below and above each
     * edge), runs that length's function, and decodes from position n.
     */
    @Test
    public void promptsPadToTheSmallestPrefillLengthThatHoldsThem() throws Exception {
        Manifest manifest = Manifest.parse(Vectors.bytes("manifests/language-model.json"), "language-model.json");
        Manifest.LLM llm = manifest.llm();
        assertEquals(List.of(16, 32, 64), llm.prefillLengths());
        Set<String> functions = manifest.chunks().get(0).functions().keySet();
        List<Integer> unsorted = new ArrayList<>(llm.prefillLengths());
        Collections.reverse(unsorted);
        int[][] cases = {{1, 16}, {15, 16}, {16, 16}, {17, 32}, {31, 32}, {32, 32}, {33, 64}, {63, 64}, {64, 64}};
        for (int[] c : cases) {
            int n = c[0];
            int length = c[1];
            Fake fake = new Fake(5, 6);
            float[] values = new float[2 * n];
            for (int i = 0; i < values.length; i++) values[i] = i;
            GreedyDecoder.Generation generation = fake.decoder(unsorted, llm.maxLength())
                    .generate(Tensor.ofFloats(new int[] {n, 2}, values), 2);
            assertEquals("n " + n, List.of(length), fake.lengths);
            assertEquals("n " + n, length, generation.prefillLength());
            assertTrue(functions.contains(Contract.prefillFunction(length)));
            assertEquals("n " + n, Tensor.ofFloats(new int[] {1, length, 2}, Arrays.copyOf(values, 2 * length)),
                    fake.embeds.get(0));
            assertEquals(List.of(n - 1), fake.lastIndex);
            assertEquals(List.of(n), fake.positions);
        }
        Fake fake = new Fake(1);
        GreedyDecoder<Integer> decoder = fake.decoder(List.of(64, 16, 32), llm.maxLength());
        assertEquals(List.of(16, 32, 64), decoder.prefillLengths());
        assertEquals(64, decoder.prefillLength());
        try {
            decoder.generate(Tensor.ofFloats(new int[] {65, 2}, new float[130]), 1);
            fail("prefilled 65 tokens");
        } catch (ArtifactException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("longer than the exported prefill length 64"));
        }
        assertTrue("nothing ran", fake.lengths.isEmpty());
    }

    private static void assertRefused(Fake fake, Tensor prompt, int maxNewTokens, String words) {
        try {
            fake.decoder().generate(prompt, maxNewTokens);
            fail("generated from " + prompt + " with maxNewTokens " + maxNewTokens);
        } catch (ArtifactException e) {
            assertTrue(e.getMessage(), e.getMessage().contains(words));
        }
    }

    @Test
    public void refusals() throws Exception {
        Fake fake = new Fake(1, 1, 1, 1, 1);
        assertRefused(fake, Tensor.ofFloats(new int[] {5, 2}, new float[10]), 1, "prefill length 4");
        assertRefused(fake, PROMPT, 0, "pass both >= 1");
        assertRefused(fake, Tensor.ofFloats(new int[] {0, 2}, new float[0]), 1, "pass both >= 1");
        assertRefused(fake, PROMPT, 6, "maxNewTokens 5 or less");
        assertEquals(5, fake.decoder().generate(PROMPT, 5).tokens().length);
        assertEquals("nothing ran before a refusal", 5, fake.embeds.size());
    }
}
