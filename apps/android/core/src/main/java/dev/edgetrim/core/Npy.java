package dev.edgetrim.core;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;

/**
 * A NumPy {@code .npy} array (format version 1-3, little-endian float32 {@code <f4} or float16 {@code <f2}, or int8
 * {@code |i1}; C order), as artifacts store their data files: the token-embedding table [V, D] (int8 with its scales
 * [V] in quantized exports) and the null caption [L, C]. Values are widened to float32 when read; the bytes stay in
 * the (memory-mapped) buffer. Immutable.
 */
public final class Npy {
    private static final byte[] MAGIC = {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y'};

    private final int[] shape;
    private final String dtype;
    private final ByteBuffer data;
    private final int offset;

    private Npy(int[] shape, String dtype, ByteBuffer data, int offset) {
        this.shape = shape;
        this.dtype = dtype;
        this.data = data;
        this.offset = offset;
    }

    /** The file at {@code path}, memory-mapped (at most 2 GiB). */
    public static Npy read(Path path) throws IOException, ArtifactException {
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = channel.size();
            if (size > Integer.MAX_VALUE) {
                throw new ArtifactException(path + " holds " + size + " bytes; .npy files of at most 2 GiB can be read");
            }
            return parse(channel.map(FileChannel.MapMode.READ_ONLY, 0, size), path.toString());
        }
    }

    /** The bytes of a {@code .npy} file (shared, not copied). */
    public static Npy parse(byte[] data) throws ArtifactException {
        return parse(ByteBuffer.wrap(data), "the data");
    }

    private static Npy parse(ByteBuffer buffer, String name) throws ArtifactException {
        ByteBuffer data = buffer.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        int size = data.limit();
        boolean magic = size >= 10;
        for (int i = 0; magic && i < MAGIC.length; i++) magic = data.get(i) == MAGIC[i];
        if (!magic) throw new ArtifactException(name + " is not a .npy file");
        int major = data.get(6) & 0xFF;
        int start = major == 1 ? 10 : 12;
        long headerLength = major == 1 ? data.getShort(8) & 0xFFFF
                : size >= 12 ? data.getInt(8) & 0xFFFF_FFFFL : Long.MAX_VALUE;
        if (size - start < headerLength) throw new ArtifactException("the .npy header of " + name + " is truncated");
        byte[] headerBytes = new byte[(int) headerLength];
        for (int i = 0; i < headerBytes.length; i++) headerBytes[i] = data.get(start + i);
        String header = new String(headerBytes, StandardCharsets.UTF_8);

        String descr = field(header, "descr");
        int quote = descr != null && descr.startsWith("'") ? descr.indexOf('\'', 1) : -1;
        String dtype = quote > 0 ? descr.substring(1, quote) : null;
        if (!"<f4".equals(dtype) && !"<f2".equals(dtype) && !"|i1".equals(dtype) && !"|u1".equals(dtype)) {
            throw new ArtifactException("unsupported .npy dtype in " + name + " (" + header.trim()
                    + "): float32, float16 (little-endian), int8 or uint8 only");
        }
        String order = field(header, "fortran_order");
        if (order == null || !order.startsWith("False")) throw new ArtifactException(name + " is not a C-order .npy");
        String shapeText = field(header, "shape");
        int open = shapeText == null ? -1 : shapeText.indexOf('(');
        int close = shapeText == null ? -1 : shapeText.indexOf(')');
        if (open < 0 || close < open) throw new ArtifactException("the .npy header of " + name + " has no shape");
        int[] shape = Arrays.stream(shapeText.substring(open + 1, close).split(","))
                .map(String::trim).filter(s -> !s.isEmpty()).mapToInt(Npy::dimension).toArray();
        if (Arrays.stream(shape).anyMatch(d -> d < 0)) {
            throw new ArtifactException("the .npy header of " + name + " has a bad shape: " + shapeText);
        }
        int offset = start + (int) headerLength;
        long count = 1;
        for (int dim : shape) count *= dim;
        if (size - offset < count * width(dtype)) throw new ArtifactException(".npy data of " + name + " is truncated");
        return new Npy(shape, dtype, data, offset);
    }

    /** A dimension of the shape; -1 (refused) when it is not a decimal int. */
    private static int dimension(String text) {
        try {
            return Integer.parseInt(text);
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    /** The text after {@code 'key':} in the header dict, whitespace trimmed; null when the key is absent. */
    private static String field(String header, String key) {
        String label = "'" + key + "':";
        int at = header.indexOf(label);
        return at < 0 ? null : header.substring(at + label.length()).trim();
    }

    private static int width(String dtype) {
        return "<f4".equals(dtype) ? 4 : "<f2".equals(dtype) ? 2 : 1;
    }

    public int[] shape() {
        return shape.clone();
    }

    /** {@code <f4} (float32), {@code <f2} (float16), {@code |i1} (int8) or {@code |u1} (uint8). */
    public String dtype() {
        return dtype;
    }

    /** Every value as float32, row-major. */
    public float[] floats() {
        long count = 1;
        for (int dim : shape) count *= dim;
        return values(0, (int) count);
    }

    /** Row {@code index} of a 2-D array ([D] of [R, D]) as float32. */
    public float[] row(int index) throws ArtifactException {
        if (shape.length != 2 || index < 0 || index >= shape[0]) {
            throw new ArtifactException("row " + index + " is outside an array of shape " + Arrays.toString(shape));
        }
        return values(index * shape[1], shape[1]);
    }

    private float[] values(int first, int count) {
        float[] out = new float[count];
        switch (width(dtype)) {
            case 4 -> {
                for (int i = 0; i < count; i++) out[i] = data.getFloat(offset + (first + i) * 4);
            }
            case 2 -> {
                for (int i = 0; i < count; i++) out[i] = halfToFloat(data.getShort(offset + (first + i) * 2));
            }
            default -> {
                int mask = "|u1".equals(dtype) ? 0xFF : -1;  // uint8: the byte unsigned
                for (int i = 0; i < count; i++) out[i] = data.get(offset + first + i) & mask;
            }
        }
        return out;
    }

    /** IEEE 754 half precision -> single (every half value, subnormals and infinities included). */
    private static float halfToFloat(short half) {
        int bits = half & 0xFFFF;
        int sign = (bits >>> 15) << 31;
        int exponent = bits >>> 10 & 0x1F;
        int fraction = bits & 0x3FF;
        if (exponent == 0x1F) return Float.intBitsToFloat(sign | 0x7F80_0000 | fraction << 13);
        if (exponent == 0) {
            float magnitude = fraction * 0x1p-24f;
            return sign == 0 ? magnitude : -magnitude;
        }
        return Float.intBitsToFloat(sign | (exponent + 112) << 23 | fraction << 13);
    }
}
