package dev.edgetrim.core;

/**
 * Lossy UTF-8 decoding exactly as Python's {@code bytes.decode("utf-8", errors="replace")} (and Swift's
 * {@code String(decoding:as:)}): each maximal subpart of an ill-formed sequence becomes one U+FFFD (Unicode's
 * "U+FFFD substitution of maximal subparts"), e.g. {@code ED A0 80} (a surrogate) -> three, {@code E6 97} cut short
 * -> one. Java's {@code new String(bytes, UTF_8)} differs on some of these sequences.
 */
final class Utf8 {
    private Utf8() {}

    static final char REPLACEMENT = '\uFFFD';

    static String decode(byte[] bytes) {
        StringBuilder out = new StringBuilder(bytes.length);
        int i = 0;
        while (i < bytes.length) {
            int lead = bytes[i] & 0xFF;
            if (lead < 0x80) {
                out.append((char) lead);
                i++;
                continue;
            }
            // continuation bytes after the lead, and the range of the first one (Unicode Table 3-7)
            int need;
            int low = 0x80;
            int high = 0xBF;
            if (lead >= 0xC2 && lead <= 0xDF) {
                need = 1;
            } else if (lead >= 0xE0 && lead <= 0xEF) {
                need = 2;
                if (lead == 0xE0) low = 0xA0;
                if (lead == 0xED) high = 0x9F;
            } else if (lead >= 0xF0 && lead <= 0xF4) {
                need = 3;
                if (lead == 0xF0) low = 0x90;
                if (lead == 0xF4) high = 0x8F;
            } else {
                out.append(REPLACEMENT);
                i++;
                continue;
            }
            int codePoint = lead & (0x3F >> need);
            int j = i + 1;
            boolean complete = true;
            for (int k = 0; k < need; k++, j++) {
                int next = j < bytes.length ? bytes[j] & 0xFF : -1;
                if (next < (k == 0 ? low : 0x80) || next > (k == 0 ? high : 0xBF)) {
                    complete = false;
                    break;
                }
                codePoint = codePoint << 6 | next & 0x3F;
            }
            if (complete) {
                out.appendCodePoint(codePoint);
            } else {
                out.append(REPLACEMENT);
            }
            i = j;
        }
        return out.toString();
    }
}
