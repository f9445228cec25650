package dev.edgetrim.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.junit.Test;

/**
 * tokenizer/cases.json against tokenizer/tokenizer.json, plus the tokenizer.json variants the reader supports or
 * refuses (mirrors EdgetrimKit's TokenizerTests).
 */
public final class TokenizerTest {
    static JSONArray cases(String key) throws Exception {
        return Vectors.json("tokenizer/cases.json").getJSONArray(key);
    }

    static Tokenizer tokenizer() throws Exception {
        return Tokenizer.read(Vectors.path("tokenizer/tokenizer.json"));
    }

    /** The conformance tokenizer.json as a mutable object, for variants. */
    static JSONObject json() throws Exception {
        return Vectors.json("tokenizer/tokenizer.json");
    }

    static int[] ints(JSONArray array) throws JSONException {
        int[] out = new int[array.length()];
        for (int i = 0; i < out.length; i++) out[i] = array.getInt(i);
        return out;
    }

    @Test
    public void encodeVectors() throws Exception {
        Tokenizer tokenizer = tokenizer();
        JSONArray cases = cases("encode");
        int checked = 0;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            String text = c.getString("text");
            assertArrayEquals(JSONObject.quote(text), ints(c.getJSONArray("ids")), tokenizer.encode(text, true));
            checked++;
        }
        assertEquals(10, checked);
        assertEquals(cases.length(), checked);
    }

    @Test
    public void decodeVectors() throws Exception {
        Tokenizer tokenizer = tokenizer();
        JSONArray cases = cases("decode");
        int checked = 0;
        int unknown = 0;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            int[] ids = ints(c.getJSONArray("ids"));
            String text = c.getString("text");
            assertEquals(c.toString(), text, tokenizer.detokenize(ids));
            if (c.has("unknown_ids_as")) {
                unknown++;
            } else {
                assertEquals(c.toString(), text, tokenizer.decode(ids));
            }
            checked++;
        }
        assertEquals(10, checked);
        assertEquals(cases.length(), checked);
        assertEquals(1, unknown);
    }

    @Test
    public void vocabulary() throws Exception {
        Tokenizer tokenizer = tokenizer();
        assertEquals(429, tokenizer.vocabSize());
        assertEquals(Integer.valueOf(3), tokenizer.tokenToId("<image>"));
        assertEquals(Integer.valueOf(410), tokenizer.tokenToId("\u0120image"));
        assertEquals("<|im_end|>", tokenizer.idToToken(2));
        assertNull(tokenizer.idToToken(600));
        assertNull(tokenizer.tokenToId("nope"));
    }

    /**
     * Ids from Python's {@code tokenizers} for whitespace classes (\v, NBSP, ideographic space are \s; U+001C is not),
     * combining marks, case-sensitive contractions, trailing whitespace and overlapping added tokens.
     */
    @Test
    public void splitEdgeCases() throws Exception {
        Tokenizer tokenizer = tokenizer();
        Object[][] expected = {
            {"a\u000B\u000Bb \u00A0c\u3000 d\u001C\u001De", new int[] {68, 203, 203, 69, 224, 130, 258, 70, 163, 226, 226, 224, 71, 220, 221, 72}},
            {"e\u0301x I'S 'sa 're", new int[] {72, 140, 227, 91, 224, 44, 10, 54, 224, 10, 86, 68, 224, 10, 265}},
            {"a  \n b   ", new int[] {68, 224, 224, 202, 272, 224, 224, 224}},
            {"<|im_start|><|im_start|><image<image>>", new int[] {1, 1, 31, 322, 318, 3, 33}},
        };
        for (Object[] c : expected) {
            assertArrayEquals(JSONObject.quote((String) c[0]), (int[]) c[1], tokenizer.encode((String) c[0]));
        }
    }

    /** Ids from Python's {@code tokenizers}: of two equal-ranked merges the leftmost goes first. */
    @Test
    public void mergeTiesGoLeftmost() throws Exception {
        Tokenizer tokenizer = tokenizer();
        assertArrayEquals(new int[] {287, 86}, tokenizer.encode("sss")); // ss s, not s ss
        assertArrayEquals(new int[] {287, 287, 86}, tokenizer.encode("sssss"));
    }

    /**
     * Ids from Python's {@code tokenizers}: {@code \s} is Unicode White_Space (U+3000, U+0085, NBSP; not U+001C).
     * With {@code ignore_merges}, a piece that is a vocabulary token becomes that token, so these show the pieces.
     */
    @Test
    public void whitespaceClassesAreUnicode() throws Exception {
        JSONObject json = json();
        JSONObject model = json.getJSONObject("model");
        model.getJSONObject("vocab").put("!\u00E3\u0122\u0122!", 429).put("!\u011C!", 430).put("!\u00C2\u0127!", 431);
        model.put("ignore_merges", true);
        Tokenizer tokenizer = new Tokenizer(json.toString());
        assertArrayEquals(new int[] {4, 163, 226, 226, 4}, tokenizer.encode("!\u3000!"));
        assertArrayEquals(new int[] {430}, tokenizer.encode("!\u001C!"));
        assertArrayEquals(new int[] {4, 130, 231, 4}, tokenizer.encode("!\u0085!"));
        assertArrayEquals(new int[] {4, 130, 258, 4}, tokenizer.encode("!\u00A0!"));
    }

    @Test
    public void decodeSpecialAndPartialCharacters() throws Exception {
        Tokenizer tokenizer = tokenizer();
        assertEquals("h\uFFFD", tokenizer.decode(new int[] {75, 131}));
        assertEquals("user", tokenizer.decode(new int[] {1, 353, 2}));
        assertEquals("<|im_start|>user<|im_end|>", tokenizer.decode(new int[] {1, 353, 2}, false));
        // ED A0 80 (a UTF-16 surrogate in UTF-8): three U+FFFD, as Python
        int[] surrogate = {tokenizer.tokenToId("\u00ED"), tokenizer.tokenToId("\u0142"), tokenizer.tokenToId("\u0122")};
        assertEquals("\uFFFD\uFFFD\uFFFD", tokenizer.decode(surrogate));
    }

    /** Python's {@code bytes.decode("utf-8", errors="replace")} of ill-formed sequences (maximal subparts). */
    @Test
    public void lossyUtf8LikePython() {
        Object[][] expected = {
            {"eda080", "\uFFFD\uFFFD\uFFFD"},
            {"68c3", "h\uFFFD"},
            {"e697", "\uFFFD"},
            {"f09f99", "\uFFFD"},
            {"c0af", "\uFFFD\uFFFD"},
            {"e080af", "\uFFFD\uFFFD\uFFFD"},
            {"f4908080", "\uFFFD\uFFFD\uFFFD\uFFFD"},
            {"f888808080", "\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD"},
            {"80bf", "\uFFFD\uFFFD"},
            {"61e697a562e697", "a\u65E5b\uFFFD"},
            {"f09f9982ff", "\uD83D\uDE42\uFFFD"},
            {"e18041", "\uFFFDA"},
            {"c241", "\uFFFDA"},
            {"", ""},
        };
        for (Object[] c : expected) {
            String hex = (String) c[0];
            byte[] bytes = new byte[hex.length() / 2];
            for (int i = 0; i < bytes.length; i++) bytes[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
            assertEquals(hex, c[1], Utf8.decode(bytes));
        }
    }

    /** Qwen2 / Llama 3 style: a Split pre-tokenizer then ByteLevel without its regex gives the same ids. */
    @Test
    public void splitThenByteLevel() throws Exception {
        JSONObject json = json();
        json.put("pre_tokenizer", new JSONObject()
                .put("type", "Sequence")
                .put("pretokenizers", new JSONArray()
                        .put(new JSONObject().put("type", "Split").put("behavior", "Isolated").put("invert", false)
                                .put("pattern", new JSONObject().put("Regex",
                                        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+")))
                        .put(new JSONObject().put("type", "ByteLevel").put("add_prefix_space", false)
                                .put("trim_offsets", false).put("use_regex", false))));
        json.put("normalizer", new JSONObject().put("type", "NFC"));
        Tokenizer tokenizer = new Tokenizer(json.toString());
        JSONArray cases = cases("encode");
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            assertArrayEquals(ints(c.getJSONArray("ids")), tokenizer.encode(c.getString("text")));
        }
        assertArrayEquals(tokenizer.encode("\u00E9"), tokenizer.encode("e\u0301")); // NFC composes
        assertArrayEquals(new int[] {72, 140, 227}, tokenizer().encode("e\u0301")); // without it, e and a combining mark
    }

    @Test
    public void templatePostProcessor() throws Exception {
        JSONObject json = json();
        json.put("post_processor", new JSONObject()
                .put("type", "Sequence")
                .put("processors", new JSONArray()
                        .put(new JSONObject().put("type", "ByteLevel").put("add_prefix_space", false)
                                .put("trim_offsets", false).put("use_regex", false))
                        .put(new JSONObject()
                                .put("type", "TemplateProcessing")
                                .put("single", new JSONArray()
                                        .put(new JSONObject().put("SpecialToken",
                                                new JSONObject().put("id", "<|im_start|>").put("type_id", 0)))
                                        .put(new JSONObject().put("Sequence",
                                                new JSONObject().put("id", "A").put("type_id", 0)))
                                        .put(new JSONObject().put("SpecialToken",
                                                new JSONObject().put("id", "<|endoftext|>").put("type_id", 0))))
                                .put("pair", new JSONArray())
                                .put("special_tokens", new JSONObject()
                                        .put("<|im_start|>", new JSONObject().put("id", "<|im_start|>")
                                                .put("ids", new JSONArray().put(1))
                                                .put("tokens", new JSONArray().put("<|im_start|>")))
                                        .put("<|endoftext|>", new JSONObject().put("id", "<|endoftext|>")
                                                .put("ids", new JSONArray().put(0))
                                                .put("tokens", new JSONArray().put("<|endoftext|>")))))));
        Tokenizer tokenizer = new Tokenizer(json.toString());
        assertArrayEquals(new int[] {1, 428, 0}, tokenizer.encode("Describe", true));
        assertArrayEquals(new int[] {428}, tokenizer.encode("Describe", false));
    }

    @Test
    public void prefixSpace() throws Exception {
        JSONObject json = json();
        json.put("pre_tokenizer", new JSONObject().put("type", "ByteLevel").put("add_prefix_space", true)
                .put("trim_offsets", true).put("use_regex", true));
        Tokenizer tokenizer = new Tokenizer(json.toString());
        Tokenizer plain = tokenizer();
        assertArrayEquals(plain.encode(" image<image> image"), tokenizer.encode("image<image>image"));
        assertArrayEquals(new int[] {410, 3, 410}, tokenizer.encode("image<image>image"));
        assertArrayEquals(new int[0], tokenizer.encode(""));
    }

    @Test
    public void ignoreMerges() throws Exception {
        JSONObject json = json();
        JSONObject model = json.getJSONObject("model");
        model.getJSONObject("vocab").put("xyz", 429);
        model.put("ignore_merges", true);
        assertArrayEquals(new int[] {429, 264}, new Tokenizer(json.toString()).encode("xyz the"));
    }

    private interface Change {
        void apply(JSONObject json) throws JSONException;
    }

    private static void refused(Change change, String words) throws Exception {
        JSONObject json = json();
        change.apply(json);
        try {
            new Tokenizer(json.toString());
            fail("accepted, expected a refusal naming " + words);
        } catch (ArtifactException e) {
            assertTrue(e.getMessage(), e.getMessage().contains(words));
        }
    }

    @Test
    public void refusals() throws Exception {
        try {
            new Tokenizer("{not json");
            fail("accepted text that is not JSON");
        } catch (ArtifactException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("not a JSON object"));
        }
        refused(json -> json.put("model", new JSONObject().put("type", "WordPiece")
                .put("vocab", new JSONObject().put("a", 0))), "BPE");
        refused(json -> json.put("decoder", new JSONObject().put("type", "Metaspace")), "decoder");
        refused(json -> json.put("pre_tokenizer", new JSONObject().put("type", "Whitespace")), "ByteLevel");
        refused(json -> json.put("pre_tokenizer", JSONObject.NULL), "ByteLevel");
        refused(json -> json.put("normalizer", new JSONObject().put("type", "Lowercase")), "Lowercase");
        refused(json -> json.put("post_processor", new JSONObject().put("type", "Unknown")), "Unknown");
        refused(json -> json.put("truncation", new JSONObject().put("max_length", 8)), "truncation");
        refused(json -> json.getJSONObject("model").put("byte_fallback", true), "byte fallback");
        refused(json -> json.getJSONObject("model").getJSONObject("vocab").remove("\u0100"), "byte symbol");
        refused(json -> json.getJSONArray("added_tokens").getJSONObject(0).put("lstrip", true), "lstrip");
    }
}
