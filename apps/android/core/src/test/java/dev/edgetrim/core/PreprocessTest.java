package dev.edgetrim.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import dev.edgetrim.core.Resample.RgbImage;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;

public class PreprocessTest {
    private static final List<Double> CLIP = List.of(0.5, 0.5, 0.5);

    /** Every case of preprocess.json: the views byte for byte, {@code pixel_values} within 1e-3. */
    @Test
    public void conformanceVectors() throws Exception {
        JSONArray cases = new JSONArray(Vectors.text("preprocess.json"));
        assertTrue(cases.length() > 0);
        int consumed = 0;
        float worst = 0;
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.getJSONObject(i);
            String name = c.getString("name");
            JSONArray grid = c.getJSONArray("grid");
            RgbImage image = new RgbImage(c.getInt("width"), c.getInt("height"), Vectors.bytes(c.getString("input")));
            Preprocess pre = new Preprocess(c.getInt("image_size"), grid.getInt(0), grid.getInt(1),
                    doubles(c.getJSONArray("mean")), doubles(c.getJSONArray("std")));

            List<RgbImage> views = pre.views(image);
            assertEquals(name, pre.partitions(), views.size());
            ByteArrayOutputStream joined = new ByteArrayOutputStream();
            for (RgbImage view : views) {
                assertEquals(name, pre.imageSize(), view.width());
                assertEquals(name, pre.imageSize(), view.height());
                joined.write(view.pixels());
            }
            assertArrayEquals(name + " views", Vectors.bytes(c.getString("views")), joined.toByteArray());

            Tensor tensor = pre.pixelValues(image);
            float[] expected = Vectors.float32(c.getString("expected"));
            JSONArray shape = c.getJSONArray("shape");
            int[] wantShape = new int[shape.length()];
            for (int d = 0; d < wantShape.length; d++) wantShape[d] = shape.getInt(d);
            assertArrayEquals(name, wantShape, tensor.shape());
            assertEquals(name, "float32", tensor.dtype());
            assertEquals(name, expected.length, tensor.count());
            float maxError = 0;
            float[] got = tensor.floats();
            for (int k = 0; k < expected.length; k++) maxError = Math.max(maxError, Math.abs(got[k] - expected[k]));
            System.out.println("preprocess " + name + ": max |error| = " + maxError);
            assertTrue(name + " max error " + maxError, maxError <= 1e-3f);
            worst = Math.max(worst, maxError);
            consumed++;
        }
        System.out.println("preprocess: " + consumed + " cases, max |error| = " + worst);
        assertEquals(cases.length(), consumed);
    }

    @Test
    public void pythonRoundHalvesToEven() {
        double[] inputs = {0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001};
        int[] rounded = new int[inputs.length];
        for (int i = 0; i < inputs.length; i++) rounded[i] = Preprocess.pythonRound(inputs[i]);
        assertArrayEquals(new int[] {0, 2, 2, 0, -2, 2, 3}, rounded);
    }

    @Test
    public void partitions() {
        assertEquals(1, new Preprocess(8, 1, 1, CLIP, CLIP).partitions());
        assertEquals(7, new Preprocess(8, 2, 3, CLIP, CLIP).partitions());
    }

    /** A wide image in a 2x2 grid of 4-pixel cells: fitted to 8x2, centred at y = 3, black above and below. */
    @Test
    public void fitPadsWithBlackAndCentres() {
        RgbImage white = new RgbImage(8, 2, filled(8 * 2 * 3, 255));
        Preprocess pre = new Preprocess(4, 2, 2, List.of(0.0, 0.0, 0.0), List.of(1.0, 1.0, 1.0));
        List<RgbImage> views = pre.views(white);
        assertEquals(5, views.size());
        assertArrayEquals(new int[] {0, 0, 0, 255}, firstColumnRed(views.get(1)));
        assertArrayEquals(new int[] {255, 0, 0, 0}, firstColumnRed(views.get(3)));
        Tensor tensor = pre.pixelValues(white);
        assertArrayEquals(new int[] {1, 5, 3, 4, 4}, tensor.shape());
        assertEquals(1f, tensor.floats()[0], 0f);  // full view: (255/255 - 0) / 1
    }

    // Resampler against Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC), Pillow 13.0.0.

    @Test
    public void identitySizeIsACopy() {
        byte[] pixels = new byte[18];
        for (int i = 0; i < pixels.length; i++) pixels[i] = (byte) (i * 13);
        RgbImage image = new RgbImage(3, 2, pixels);
        assertEquals(image, image.resizedBicubic(3, 2));
    }

    @Test
    public void onePixelImage() {
        RgbImage dot = new RgbImage(1, 1, bytes(10, 200, 255));
        assertArrayEquals(bytes(10, 200, 255, 10, 200, 255, 10, 200, 255, 10, 200, 255, 10, 200, 255, 10, 200, 255),
                dot.resizedBicubic(3, 2).pixels());
        assertEquals(dot, dot.resizedBicubic(1, 1));
    }

    @Test
    public void upscaleClipsOvershoot() {
        RgbImage row = new RgbImage(4, 1, bytes(0, 0, 0, 255, 0, 10, 0, 255, 20, 255, 255, 30));
        assertArrayEquals(bytes(0, 0, 0, 87, 0, 3, 251, 0, 9, 128, 128, 15, 4, 255, 21, 168, 255, 27, 255, 255, 31),
                row.resizedBicubic(7, 1).pixels());
    }

    @Test
    public void downscaleIsAntialiased() {
        RgbImage row = new RgbImage(6, 1, bytes(0, 10, 255, 50, 20, 0, 100, 30, 255, 150, 40, 0, 200, 50, 255, 250, 60, 0));
        assertArrayEquals(bytes(57, 21, 141, 193, 49, 114), row.resizedBicubic(2, 1).pixels());
        RgbImage square = new RgbImage(3, 3, bytes(0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255,
                10, 20, 30, 40, 50, 60, 70, 80, 90));
        assertArrayEquals(bytes(73, 85, 79), square.resizedBicubic(1, 1).pixels());
    }

    /**
     * Both sizes change: Pillow 13 runs the vertical pass first when the height loses more than twice as many pixels
     * as the width, and the order changes the rounding.
     */
    @Test
    public void bothAxesInPillowsOrder() {
        RgbImage image = new RgbImage(2, 3, bytes(0, 50, 100, 200, 150, 250, 255, 0, 30, 60, 90, 120, 5, 250, 7, 128, 64, 32));
        assertArrayEquals(bytes(94, 11, 63, 102, 29, 85, 124, 76, 142, 145, 123, 199, 153, 141, 221,  // vertical first
                        103, 170, 7, 103, 155, 15, 101, 116, 35, 99, 77, 55, 99, 62, 63),
                image.resizedBicubic(5, 2).pixels());
        assertArrayEquals(bytes(101, 141, 153, 106, 124, 151, 143, 99, 122, 168, 124, 119, 125, 152, 101,  // vertical first
                        119, 147, 131, 141, 97, 119, 137, 132, 93, 134, 145, 112, 104, 137, 143,
                        121, 99, 145, 106, 138, 151, 130, 115, 118, 169, 117, 138, 118, 141, 110),
                pattern(6, 9).resizedBicubic(5, 3).pixels());
        assertArrayEquals(bytes(127, 89, 118, 136, 152, 113, 102, 129, 166, 161, 148, 85, 98, 144, 156,  // horizontal first
                        152, 90, 137, 123, 170, 90, 100, 104, 138, 136, 110, 99, 109, 130, 154,
                        155, 123, 118, 118, 154, 135, 172, 98, 146, 145, 117, 85, 84, 130, 139),
                pattern(9, 6).resizedBicubic(3, 5).pixels());
        assertArrayEquals(bytes(36, 85, 132, 208, 61, 108, 51, 98, 128, 193, 74, 104, 89, 132, 119,  // horizontal first
                        154, 108, 95, 127, 165, 109, 115, 141, 85, 142, 178, 105, 100, 154, 81),
                pattern(3, 2).resizedBicubic(2, 5).pixels());
    }

    @Test
    public void cropAndPad() {
        byte[] pixels = new byte[12];
        for (int i = 0; i < pixels.length; i++) pixels[i] = (byte) (i + 1);
        RgbImage image = new RgbImage(2, 2, pixels);
        assertArrayEquals(bytes(4, 5, 6, 10, 11, 12), image.cropped(1, 0, 1, 2).pixels());
        assertArrayEquals(bytes(0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 0, 7, 8, 9, 10, 11, 12),
                image.cropped(0, 1, 2, 1).padded(3, 2, 1, 1).pixels());
    }

    /** Bytes {@code (i * 37 + 11) % 256}, the test pattern the Pillow numbers above were computed from. */
    private static RgbImage pattern(int width, int height) {
        byte[] pixels = new byte[width * height * 3];
        for (int i = 0; i < pixels.length; i++) pixels[i] = (byte) ((i * 37 + 11) % 256);
        return new RgbImage(width, height, pixels);
    }

    /** The red byte of column 0 in each row of a 4-row view. */
    private static int[] firstColumnRed(RgbImage view) {
        int[] out = new int[4];
        for (int row = 0; row < 4; row++) out[row] = view.pixels()[row * view.width() * 3] & 0xFF;
        return out;
    }

    private static byte[] bytes(int... values) {
        byte[] out = new byte[values.length];
        for (int i = 0; i < values.length; i++) out[i] = (byte) values[i];
        return out;
    }

    private static byte[] filled(int count, int value) {
        byte[] out = new byte[count];
        Arrays.fill(out, (byte) value);
        return out;
    }

    private static List<Double> doubles(JSONArray array) throws Exception {
        List<Double> out = new ArrayList<>();
        for (int i = 0; i < array.length(); i++) out.add(array.getDouble(i));
        return out;
    }
}
