package dev.edgetrim.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * A byte-level BPE tokenizer read from a Hugging Face {@code tokenizer.json}, encoding and decoding exactly as the
 * {@code tokenizers} library does (GPT-2, Qwen2 and Llama 3 style tokenizers). Immutable, so safe to share between
 * threads.
 *
 * <p>Supported (anything else is refused with an {@link ArtifactException}):
 * <ul>
 * <li>model {@code BPE} whose vocabulary holds all 256 byte symbols (no dropout, byte fallback, subword prefix or
 *     suffix);
 * <li>added tokens matched exactly (no {@code lstrip}, {@code rstrip}, {@code single_word}), split out of the text
 *     first: the non-normalized ones in the raw text, the normalized ones after normalization;
 * <li>normalizer none, {@code NFC}, {@code NFD}, {@code NFKC} or {@code NFKD};
 * <li>pre-tokenizer {@code ByteLevel}, or a {@code Sequence} of {@code Split} (pattern, {@code Isolated}) ending with
 *     {@code ByteLevel}; patterns are Java regular expressions with Unicode classes ({@code \s} is White_Space,
 *     {@code \p{L}} / {@code \p{N}} the general categories), as Oniguruma reads them;
 * <li>decoder {@code ByteLevel}; post-processor none, {@code ByteLevel}, {@code TemplateProcessing},
 *     {@code RobertaProcessing}, {@code BertProcessing} or a {@code Sequence} of them (single sequences only).
 * </ul>
 */
public final class Tokenizer {
    /** GPT-2's split pattern, the one {@code ByteLevel(use_regex: true)} applies. */
    private static final String GPT2_SPLIT =
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

    /** GPT-2's {@code bytes_to_unicode}: the code point of each byte's printable symbol; [256]. */
    private static final int[] BYTE_SYMBOLS = new int[256];
    /** Code point -> byte of the symbols (256 + the 68 non-printable bytes), -1 for other code points. */
    private static final int[] SYMBOL_BYTES = new int[256 + 68];
    /** Unicode classes on the JVM; Android's regex engine (ICU) always uses them and refuses the flag. */
    private static final int UNICODE_CLASSES = unicodeClassesFlag();

    static {
        Arrays.fill(SYMBOL_BYTES, -1);
        int next = 256;
        for (int b = 0; b < 256; b++) {
            boolean printable = b >= 0x21 && b <= 0x7E || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF;
            BYTE_SYMBOLS[b] = printable ? b : next++;
            SYMBOL_BYTES[BYTE_SYMBOLS[b]] = b;
        }
    }

    /** An added token: its exact text and id. */
    private record AddedToken(String content, int id) {}

    /** A piece of the text to encode, or (text null) an added token already matched. */
    private record Segment(String text, int id) {}

    private final Map<String, Integer> vocab; // the model's
    private final Map<String, Integer> ids; // the model's and the added tokens
    private final Map<Integer, String> tokens;
    private final Set<Integer> specialIds;
    private final int[] byteIds; // [256] id of each byte's symbol
    private final Map<Long, int[]> merges; // (left id, right id) -> {rank, merged id}
    private final boolean ignoreMerges;
    private final Map<Character, List<AddedToken>> rawTokens; // by first char, longest first
    private final Map<Character, List<AddedToken>> normalizedTokens;
    private final Normalizer.Form normalization; // null: none
    private final List<Function<String, List<String>>> steps; // the pre-tokenizer: each maps a piece to pieces
    private final int[] prefix; // added before a sequence with special tokens
    private final int[] suffix; // and after it

    /** Reads a tokenizer.json file. */
    public static Tokenizer read(Path path) throws IOException, ArtifactException {
        return new Tokenizer(new String(Files.readAllBytes(path), StandardCharsets.UTF_8));
    }

    /** Parses the text of a tokenizer.json. */
    public Tokenizer(String json) throws ArtifactException {
        JSONObject root;
        try {
            root = new JSONObject(json);
        } catch (JSONException e) {
            throw new ArtifactException("not a tokenizer.json: the file is not a JSON object");
        }
        JSONObject model = root.optJSONObject("model");
        Map<String, Integer> vocab = model == null ? null : intMap(model.opt("vocab"));
        Object mergeList = model == null ? null : model.opt("merges");
        if (vocab == null || !"BPE".equals(model.opt("type")) || !(mergeList instanceof JSONArray)) {
            throw new ArtifactException("not a BPE tokenizer.json: it needs a model of type BPE with vocab and merges");
        }
        for (String key : List.of("continuing_subword_prefix", "end_of_word_suffix", "dropout")) {
            if (!isNull(model.opt(key))) {
                throw new ArtifactException("the BPE model sets `" + key + "`: only plain byte-level BPE is supported");
            }
        }
        if (Boolean.TRUE.equals(model.opt("byte_fallback"))) {
            throw new ArtifactException(
                    "the BPE model uses byte fallback (a SentencePiece-style BPE): only byte-level BPE is supported");
        }
        for (String key : List.of("truncation", "padding")) {
            if (!isNull(root.opt(key))) {
                throw new ArtifactException("the tokenizer.json sets `" + key + "`: save it without truncation and padding");
            }
        }
        JSONObject decoder = root.optJSONObject("decoder");
        if (decoder == null || !"ByteLevel".equals(decoder.opt("type"))) {
            throw new ArtifactException("the decoder is not ByteLevel: only byte-level BPE is supported");
        }
        this.vocab = vocab;
        ignoreMerges = Boolean.TRUE.equals(model.opt("ignore_merges"));
        byteIds = new int[256];
        for (int b = 0; b < 256; b++) {
            String symbol = new String(Character.toChars(BYTE_SYMBOLS[b]));
            Integer id = vocab.get(symbol);
            if (id == null) {
                throw new ArtifactException("not a byte-level BPE: the vocabulary lacks the byte symbol " + symbol);
            }
            byteIds[b] = id;
        }
        merges = merges((JSONArray) mergeList, vocab);

        Map<String, Integer> ids = new HashMap<>(vocab);
        Map<Integer, String> tokens = new HashMap<>();
        for (Map.Entry<String, Integer> entry : vocab.entrySet()) tokens.putIfAbsent(entry.getValue(), entry.getKey());
        List<AddedToken> raw = new ArrayList<>();
        List<AddedToken> normalized = new ArrayList<>();
        Set<Integer> special = new HashSet<>();
        JSONArray added = root.optJSONArray("added_tokens");
        for (int i = 0; added != null && i < added.length(); i++) {
            if (!(added.opt(i) instanceof JSONObject entry)) continue;
            Integer id = integer(entry.opt("id"));
            if (id == null || !(entry.opt("content") instanceof String content) || content.isEmpty()) {
                throw new ArtifactException("an added token lacks its id or content");
            }
            for (String flag : List.of("lstrip", "rstrip", "single_word")) {
                if (Boolean.TRUE.equals(entry.opt(flag))) {
                    throw new ArtifactException(
                            "the added token " + content + " sets `" + flag + "`: only exact matches are supported");
                }
            }
            ids.put(content, id);
            tokens.put(id, content);
            if (Boolean.TRUE.equals(entry.opt("special"))) special.add(id);
            (Boolean.TRUE.equals(entry.opt("normalized")) ? normalized : raw).add(new AddedToken(content, id));
        }
        this.ids = ids;
        this.tokens = tokens;
        specialIds = special;
        rawTokens = byFirstChar(raw);
        normalizedTokens = byFirstChar(normalized);
        normalization = normalizer(root.opt("normalizer"));
        steps = preTokenizer(root.opt("pre_tokenizer"));
        int[][] around = postProcessor(root.opt("post_processor"));
        prefix = around[0];
        suffix = around[1];
    }

    /** Number of distinct tokens, added tokens included. */
    public int vocabSize() {
        return ids.size();
    }

    /** The id of a token (a vocabulary entry or an added token), or null. */
    public Integer tokenToId(String token) {
        return ids.get(token);
    }

    /** The token of an id, or null when the tokenizer lacks it. */
    public String idToToken(int id) {
        return tokens.get(id);
    }

    /** Token ids of {@code text} with the post-processor's special tokens (e.g. a BOS token). */
    public int[] encode(String text) {
        return encode(text, true);
    }

    /** Token ids of {@code text}; {@code addSpecialTokens} applies the post-processor's template. */
    public int[] encode(String text, boolean addSpecialTokens) {
        List<Integer> out = new ArrayList<>();
        if (addSpecialTokens) for (int id : prefix) out.add(id);
        for (Segment segment : split(text, rawTokens)) {
            if (segment.text() == null) {
                out.add(segment.id());
                continue;
            }
            String normalized = normalization == null ? segment.text() : Normalizer.normalize(segment.text(), normalization);
            for (Segment inner : split(normalized, normalizedTokens)) {
                if (inner.text() == null) {
                    out.add(inner.id());
                } else {
                    for (String piece : preTokenize(inner.text())) bpe(piece.getBytes(StandardCharsets.UTF_8), out);
                }
            }
        }
        if (addSpecialTokens) for (int id : suffix) out.add(id);
        int[] result = new int[out.size()];
        for (int i = 0; i < result.length; i++) result[i] = out.get(i);
        return result;
    }

    /** Text of {@code ids} without special tokens; see {@link #decode(int[], boolean)}. */
    public String decode(int[] ids) {
        return decode(ids, true);
    }

    /**
     * Text of {@code ids}: ids the tokenizer lacks are dropped, special tokens too unless {@code skipSpecialTokens} is
     * false; invalid UTF-8 (a character cut between tokens) becomes U+FFFD as Python's {@code errors="replace"} does.
     */
    public String decode(int[] ids, boolean skipSpecialTokens) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        for (int id : ids) {
            String token = tokens.get(id);
            if (token == null || skipSpecialTokens && specialIds.contains(id)) continue;
            byte[] mapped = symbolsToBytes(token);
            if (mapped == null) mapped = token.getBytes(StandardCharsets.UTF_8);
            bytes.write(mapped, 0, mapped.length);
        }
        return Utf8.decode(bytes.toByteArray());
    }

    /**
     * Text of {@code ids} (special tokens skipped); ids the tokenizer lacks (a preset's vocabulary is larger than its
     * tokenizer) show as {@code <id:N>}, as the Python runtime's {@code detokenize}.
     */
    public String detokenize(int[] ids) {
        StringBuilder text = new StringBuilder();
        int start = 0; // the run of known ids since the last unknown one
        for (int i = 0; i < ids.length; i++) {
            if (tokens.containsKey(ids[i])) continue;
            text.append(decode(Arrays.copyOfRange(ids, start, i))).append("<id:").append(ids[i]).append('>');
            start = i + 1;
        }
        return text.append(decode(Arrays.copyOfRange(ids, start, ids.length))).toString();
    }

    /** The bytes of a token made only of byte symbols, else null. */
    private static byte[] symbolsToBytes(String token) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(token.length());
        for (int i = 0; i < token.length(); ) {
            int codePoint = token.codePointAt(i);
            int b = codePoint < SYMBOL_BYTES.length ? SYMBOL_BYTES[codePoint] : -1;
            if (b < 0) return null;
            bytes.write(b);
            i += Character.charCount(codePoint);
        }
        return bytes.toByteArray();
    }

    // encoding

    /** {@code text} split around the leftmost-longest exact matches of {@code added}, no text segment empty. */
    private static List<Segment> split(String text, Map<Character, List<AddedToken>> added) {
        List<Segment> segments = new ArrayList<>();
        int start = 0;
        int i = 0;
        while (i < text.length()) {
            AddedToken match = null;
            for (AddedToken token : added.getOrDefault(text.charAt(i), List.of())) {
                if (text.startsWith(token.content(), i)) {
                    match = token;
                    break;
                }
            }
            if (match == null) {
                i++;
                continue;
            }
            if (start < i) segments.add(new Segment(text.substring(start, i), 0));
            segments.add(new Segment(null, match.id()));
            i += match.content().length();
            start = i;
        }
        if (start < text.length()) segments.add(new Segment(text.substring(start), 0));
        return segments;
    }

    private List<String> preTokenize(String text) {
        List<String> pieces = List.of(text);
        for (Function<String, List<String>> step : steps) {
            List<String> next = new ArrayList<>();
            for (String piece : pieces) next.addAll(step.apply(piece));
            pieces = next;
        }
        return pieces;
    }

    /** The matches of {@code regex} in {@code text} and the text between them, in order, none empty. */
    private static List<String> split(String text, Pattern regex) {
        List<String> pieces = new ArrayList<>();
        int start = 0;
        Matcher matcher = regex.matcher(text);
        while (matcher.find()) {
            if (start < matcher.start()) pieces.add(text.substring(start, matcher.start()));
            if (matcher.start() < matcher.end()) pieces.add(matcher.group());
            start = matcher.end();
        }
        if (start < text.length()) pieces.add(text.substring(start));
        return pieces;
    }

    /**
     * BPE over one pre-tokenized word's bytes, appending its ids to {@code out}: merge the lowest-ranked adjacent pair
     * (leftmost on ties) until none merges.
     */
    private void bpe(byte[] word, List<Integer> out) {
        if (ignoreMerges) {
            StringBuilder symbols = new StringBuilder();
            for (byte b : word) symbols.appendCodePoint(BYTE_SYMBOLS[b & 0xFF]);
            Integer id = vocab.get(symbols.toString());
            if (id != null) {
                out.add(id);
                return;
            }
        }
        int[] symbols = new int[word.length];
        for (int i = 0; i < word.length; i++) symbols[i] = byteIds[word[i] & 0xFF];
        int count = symbols.length;
        while (count > 1) {
            int bestRank = Integer.MAX_VALUE;
            int bestIndex = -1;
            int bestId = 0;
            for (int i = 0; i < count - 1; i++) {
                int[] merge = merges.get(pair(symbols[i], symbols[i + 1]));
                if (merge != null && merge[0] < bestRank) {
                    bestRank = merge[0];
                    bestIndex = i;
                    bestId = merge[1];
                }
            }
            if (bestIndex < 0) break;
            symbols[bestIndex] = bestId;
            System.arraycopy(symbols, bestIndex + 2, symbols, bestIndex + 1, count - bestIndex - 2);
            count--;
        }
        for (int i = 0; i < count; i++) out.add(symbols[i]);
    }

    private static long pair(int left, int right) {
        return (long) left << 32 | right & 0xFFFFFFFFL;
    }

    // reading tokenizer.json

    private static boolean isNull(Object value) {
        return value == null || value == JSONObject.NULL;
    }

    /** A JSON integer that fits an int, else null. */
    private static Integer integer(Object value) {
        if (value instanceof Integer i) return i;
        if (value instanceof Long l && l == l.intValue()) return l.intValue();
        return null;
    }

    /** A JSON object of integers, else null. */
    private static Map<String, Integer> intMap(Object value) {
        if (!(value instanceof JSONObject object)) return null;
        Map<String, Integer> map = new HashMap<>();
        for (Iterator<String> keys = object.keys(); keys.hasNext(); ) {
            String key = keys.next();
            Integer id = integer(object.opt(key));
            if (id == null) return null;
            map.put(key, id);
        }
        return map;
    }

    /** A JSON array of integers, else null. */
    private static int[] intArray(Object value) {
        if (!(value instanceof JSONArray array)) return null;
        int[] out = new int[array.length()];
        for (int i = 0; i < out.length; i++) {
            Integer id = integer(array.opt(i));
            if (id == null) return null;
            out[i] = id;
        }
        return out;
    }

    /** The {@code type} of a JSON object, or {@code ?}. */
    private static String type(Object json) {
        return json instanceof JSONObject object && object.opt("type") instanceof String type ? type : "?";
    }

    /** Merges "a b" or ["a", "b"], ranked by position (a repeated pair keeps its last rank, as {@code tokenizers} does). */
    private static Map<Long, int[]> merges(JSONArray list, Map<String, Integer> vocab) throws ArtifactException {
        Map<Long, int[]> merges = new HashMap<>();
        for (int rank = 0; rank < list.length(); rank++) {
            Object entry = list.opt(rank);
            String[] parts = null;
            if (entry instanceof String text) {
                parts = text.split(" ", -1);
            } else if (entry instanceof JSONArray array && array.length() == 2
                    && array.opt(0) instanceof String left && array.opt(1) instanceof String right) {
                parts = new String[] {left, right};
            }
            Integer left = parts != null && parts.length == 2 ? vocab.get(parts[0]) : null;
            Integer right = left != null ? vocab.get(parts[1]) : null;
            Integer id = right != null ? vocab.get(parts[0] + parts[1]) : null;
            if (id == null) {
                throw new ArtifactException("the merge " + entry + " is not a pair of vocabulary tokens merging into one");
            }
            merges.put(pair(left, right), new int[] {rank, id});
        }
        return merges;
    }

    private static Map<Character, List<AddedToken>> byFirstChar(List<AddedToken> tokens) {
        Map<Character, List<AddedToken>> map = new HashMap<>();
        for (AddedToken token : tokens) map.computeIfAbsent(token.content().charAt(0), c -> new ArrayList<>()).add(token);
        for (List<AddedToken> group : map.values()) {
            group.sort(Comparator.comparingInt((AddedToken token) -> token.content().length()).reversed());
        }
        return map;
    }

    private static Normalizer.Form normalizer(Object json) throws ArtifactException {
        if (isNull(json)) return null;
        switch (type(json)) {
            case "NFC": return Normalizer.Form.NFC;
            case "NFD": return Normalizer.Form.NFD;
            case "NFKC": return Normalizer.Form.NFKC;
            case "NFKD": return Normalizer.Form.NFKD;
            default:
                throw new ArtifactException(
                        "the normalizer " + type(json) + " is not supported: only none, NFC, NFD, NFKC, NFKD");
        }
    }

    private static List<Function<String, List<String>>> preTokenizer(Object json) throws ArtifactException {
        JSONObject object = json instanceof JSONObject o ? o : new JSONObject();
        List<JSONObject> parts = new ArrayList<>();
        if ("Sequence".equals(object.opt("type"))) {
            JSONArray list = object.optJSONArray("pretokenizers");
            for (int i = 0; list != null && i < list.length(); i++) {
                if (!(list.opt(i) instanceof JSONObject part)) {
                    parts.clear();
                    break;
                }
                parts.add(part);
            }
        } else {
            parts.add(object);
        }
        if (parts.isEmpty() || !"ByteLevel".equals(parts.get(parts.size() - 1).opt("type"))) {
            throw new ArtifactException("the pre-tokenizer does not end with ByteLevel: only byte-level BPE is supported");
        }
        List<Function<String, List<String>>> steps = new ArrayList<>();
        for (JSONObject part : parts) {
            switch (type(part)) {
                case "ByteLevel":
                    if (Boolean.TRUE.equals(part.opt("add_prefix_space"))) {
                        steps.add(piece -> List.of(piece.startsWith(" ") ? piece : " " + piece));
                    }
                    if (!(part.opt("use_regex") instanceof Boolean useRegex) || useRegex) {
                        Pattern regex = regex(GPT2_SPLIT);
                        steps.add(piece -> split(piece, regex));
                    }
                    break;
                case "Split":
                    Map<String, String> pattern = stringMap(part.opt("pattern"));
                    String source = pattern == null ? null
                            : pattern.containsKey("Regex") ? pattern.get("Regex")
                            : pattern.containsKey("String") ? Pattern.quote(pattern.get("String")) : null;
                    if (!"Isolated".equals(part.opt("behavior")) || Boolean.TRUE.equals(part.opt("invert"))
                            || source == null) {
                        throw new ArtifactException(
                                "only Split pre-tokenizers with a pattern and behavior Isolated (not inverted) are supported");
                    }
                    Pattern regex = regex(source);
                    steps.add(piece -> split(piece, regex));
                    break;
                default:
                    throw new ArtifactException(
                            "the pre-tokenizer " + type(part) + " is not supported: only ByteLevel and Split");
            }
        }
        return steps;
    }

    /** A JSON object of strings, else null. */
    private static Map<String, String> stringMap(Object value) {
        if (!(value instanceof JSONObject object)) return null;
        Map<String, String> map = new HashMap<>();
        for (Iterator<String> keys = object.keys(); keys.hasNext(); ) {
            String key = keys.next();
            if (!(object.opt(key) instanceof String text)) return null;
            map.put(key, text);
        }
        return map;
    }

    /** {@code pattern} with Unicode classes ({@code \s} = White_Space, as Oniguruma and ICU read it). */
    private static Pattern regex(String pattern) throws ArtifactException {
        try {
            return Pattern.compile(pattern, UNICODE_CLASSES);
        } catch (PatternSyntaxException e) {
            throw new ArtifactException("the pre-tokenizer pattern " + pattern + " is not a valid regular expression");
        }
    }

    private static int unicodeClassesFlag() {
        try {
            Pattern.compile("", Pattern.UNICODE_CHARACTER_CLASS);
            return Pattern.UNICODE_CHARACTER_CLASS;
        } catch (IllegalArgumentException e) {
            return 0;
        }
    }

    /** {ids before, ids after} a single sequence encoded with special tokens. */
    private static int[][] postProcessor(Object json) throws ArtifactException {
        if (isNull(json)) return new int[][] {{}, {}};
        JSONObject object = json instanceof JSONObject o ? o : new JSONObject();
        switch (type(object)) {
            case "ByteLevel":
                return new int[][] {{}, {}};
            case "Sequence": {
                List<Integer> before = new ArrayList<>();
                List<Integer> after = new ArrayList<>();
                JSONArray processors = object.optJSONArray("processors");
                for (int i = 0; processors != null && i < processors.length(); i++) {
                    int[][] around = postProcessor(processors.opt(i));
                    before.addAll(0, boxed(around[0]));
                    after.addAll(boxed(around[1]));
                }
                return new int[][] {unboxed(before), unboxed(after)};
            }
            case "RobertaProcessing":
            case "BertProcessing": {
                Integer cls = last(object.opt("cls"));
                Integer sep = last(object.opt("sep"));
                if (cls == null || sep == null) throw new ArtifactException("the post-processor lacks its cls and sep tokens");
                return new int[][] {{cls}, {sep}};
            }
            case "TemplateProcessing":
                return template(object);
            default:
                throw new ArtifactException("the post-processor " + type(object) + " is not supported: only ByteLevel, "
                        + "TemplateProcessing, RobertaProcessing, BertProcessing");
        }
    }

    /** The ids around the one {@code Sequence} of a TemplateProcessing's {@code single} template. */
    private static int[][] template(JSONObject object) throws ArtifactException {
        List<JSONObject> single = new ArrayList<>();
        JSONArray list = object.optJSONArray("single");
        for (int i = 0; list != null && i < list.length(); i++) {
            if (list.opt(i) instanceof JSONObject piece) single.add(piece);
        }
        if (single.stream().filter(piece -> piece.has("Sequence")).count() != 1) {
            throw new ArtifactException("the post-processor's single template needs exactly one sequence");
        }
        JSONObject specials = object.optJSONObject("special_tokens");
        List<Integer> before = new ArrayList<>();
        List<Integer> after = new ArrayList<>();
        boolean seen = false; // the sequence
        for (JSONObject piece : single) {
            seen |= piece.has("Sequence");
            if (!(piece.opt("SpecialToken") instanceof JSONObject special)) continue;
            JSONObject entry = special.opt("id") instanceof String name && specials != null ? specials.optJSONObject(name) : null;
            int[] ids = entry == null ? null : intArray(entry.opt("ids"));
            if (ids == null) throw new ArtifactException("the post-processor's template names an unknown special token");
            (seen ? after : before).addAll(boxed(ids));
        }
        return new int[][] {unboxed(before), unboxed(after)};
    }

    /** The id at the end of a {@code [token, id]} pair, else null. */
    private static Integer last(Object value) {
        return value instanceof JSONArray array && array.length() > 0 ? integer(array.opt(array.length() - 1)) : null;
    }

    private static List<Integer> boxed(int[] values) {
        List<Integer> out = new ArrayList<>(values.length);
        for (int value : values) out.add(value);
        return out;
    }

    private static int[] unboxed(List<Integer> values) {
        int[] out = new int[values.size()];
        for (int i = 0; i < out.length; i++) out[i] = values.get(i);
        return out;
    }
}
