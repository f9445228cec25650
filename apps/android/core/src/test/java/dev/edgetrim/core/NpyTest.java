package dev.edgetrim.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

public class NpyTest {
    /** Every npy.json case: float32 and float16 files read back to the values NumPy wrote. */
    @Test
    public void dataFilesReadAsNumPyWroteThem() throws Exception {
        JSONArray cases = new JSONArray(Vectors.text("npy.json"));
        assertEquals(2, cases.length());
        int consumed = 0;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            String file = c.getString("file");
            Npy array = Npy.read(Vectors.path(file));
            JSONArray values = c.getJSONArray("values");
            float[] want = new float[values.length()];
            for (int k = 0; k < want.length; k++) want[k] = (float) values.getDouble(k);
            JSONArray shape = c.getJSONArray("shape");
            assertEquals(file, 2, shape.length());
            assertArrayEquals(file, new int[] {shape.getInt(0), shape.getInt(1)}, array.shape());
            assertArrayEquals(file, want, array.floats(), 0f);
            assertArrayEquals(file, Arrays.copyOfRange(want, 3, 6), array.row(1), 0f);
            assertEquals(file, Float.floatToRawIntBits(-0f), Float.floatToRawIntBits(array.floats()[1]));  // -0.0 keeps its sign
            assertEquals(file, file.contains("16") ? "<f2" : "<f4", array.dtype());
            consumed++;
        }
        assertEquals(cases.length(), consumed);
    }

    @Test
    public void notAnArrayIsRefused() {
        assertThrows(ArtifactException.class, () -> Npy.parse("not numpy".getBytes(StandardCharsets.UTF_8)));
        assertThrows(ArtifactException.class, () -> Npy.read(Vectors.path("npy/float32.npy")).row(5));
    }

    /** A version-2 header, float16 infinities, NaN and subnormals; a header or data cut short is refused. */
    @Test
    public void version2HeaderAndHalfSpecials() throws Exception {
        byte[] file = npy(2, "{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }",
                0x7C00, 0xFC00, 0x7E00, 0x0001, 0x83FF);
        Npy array = Npy.parse(file);
        assertArrayEquals(new int[] {5}, array.shape());
        float[] values = array.floats();
        assertEquals(Float.POSITIVE_INFINITY, values[0], 0f);
        assertEquals(Float.NEGATIVE_INFINITY, values[1], 0f);
        assertTrue(Float.isNaN(values[2]));
        assertEquals(0x1p-24f, values[3], 0f);
        assertEquals(-1023 * 0x1p-24f, values[4], 0f);
        assertThrows(ArtifactException.class, () -> array.row(0));  // not 2-D
        assertThrows(ArtifactException.class, () -> Npy.parse(Arrays.copyOf(file, file.length - 1)));
        assertThrows(ArtifactException.class, () -> Npy.parse(Arrays.copyOf(file, 11)));
        assertThrows(ArtifactException.class,
                () -> Npy.parse(npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (0,), }")));
        assertThrows(ArtifactException.class,
                () -> Npy.parse(npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (0,), }")));
    }

    /** A .npy file of format {@code major} with {@code header} and little-endian 16-bit {@code values}. */
    private static byte[] npy(int major, String header, int... values) {
        byte[] text = header.getBytes(StandardCharsets.US_ASCII);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(0x93);
        out.writeBytes("NUMPY".getBytes(StandardCharsets.US_ASCII));
        out.write(major);
        out.write(0);
        out.write(text.length & 0xFF);
        out.write(text.length >> 8);
        if (major != 1) {
            out.write(0);
            out.write(0);
        }
        out.writeBytes(text);
        for (int value : values) {
            out.write(value & 0xFF);
            out.write(value >> 8);
        }
        return out.toByteArray();
    }
}
