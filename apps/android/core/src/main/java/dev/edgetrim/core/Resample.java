package dev.edgetrim.core;

import java.util.Arrays;

/**
 * 8-bit RGB images and Pillow's bicubic resize, byte for byte: a port of libImaging/Resample.c (Pillow 13) for 8-bit
 * images, as AnyRes preprocessing ({@link Preprocess}) uses it.
 */
public final class Resample {
    private Resample() {}

    /** Fixed-point weights carry 22 fractional bits (Pillow's {@code PRECISION_BITS}). */
    private static final int PRECISION_BITS = 32 - 8 - 2;
    /** The rounding offset every sum starts from. */
    private static final int HALF = 1 << (PRECISION_BITS - 1);

    /**
     * An 8-bit RGB image: {@code pixels} holds {@code height * width * 3} bytes, row-major, channels interleaved
     * (H x W x 3), the layout of {@code np.asarray(pil_image)} for an RGB image. The array is shared, not copied: do
     * not mutate it after handing it over. Equality compares the bytes.
     */
    public record RgbImage(int width, int height, byte[] pixels) {
        public RgbImage {
            if (width <= 0 || height <= 0) {
                throw new IllegalArgumentException("an image has at least one pixel, not " + width + "x" + height);
            }
            if (pixels.length != (long) width * height * 3) {
                throw new IllegalArgumentException(width + "x" + height + " RGB needs " + (long) width * height * 3
                        + " bytes, not " + pixels.length);
            }
        }

        /** A black image (Pillow's {@code Image.new("RGB", (width, height))}). */
        public static RgbImage black(int width, int height) {
            return new RgbImage(width, height, new byte[Math.multiplyExact(Math.multiplyExact(width, height), 3)]);
        }

        /** The {@code width} x {@code height} region whose top-left pixel is ({@code x}, {@code y}); it must lie inside. */
        public RgbImage cropped(int x, int y, int width, int height) {
            if (x < 0 || y < 0 || width <= 0 || height <= 0 || x + width > this.width || y + height > this.height) {
                throw new IllegalArgumentException("crop " + width + "x" + height + " at (" + x + ", " + y
                        + ") outside the " + this.width + "x" + this.height + " image");
            }
            byte[] out = new byte[width * height * 3];
            for (int row = 0; row < height; row++) {
                System.arraycopy(pixels, ((y + row) * this.width + x) * 3, out, row * width * 3, width * 3);
            }
            return new RgbImage(width, height, out);
        }

        /** This image on a black {@code width} x {@code height} canvas, its top-left pixel at ({@code x}, {@code y}); it must fit. */
        public RgbImage padded(int width, int height, int x, int y) {
            if (x < 0 || y < 0 || x + this.width > width || y + this.height > height) {
                throw new IllegalArgumentException("paste of " + this.width + "x" + this.height + " at (" + x + ", " + y
                        + ") outside the " + width + "x" + height + " canvas");
            }
            RgbImage canvas = black(width, height);
            int rowBytes = this.width * 3;
            for (int row = 0; row < this.height; row++) {
                System.arraycopy(pixels, row * rowBytes, canvas.pixels, ((y + row) * width + x) * 3, rowBytes);
            }
            return canvas;
        }

        /**
         * Pillow's {@code resize((width, height), Image.Resampling.BICUBIC)}, byte for byte. Two passes through an
         * intermediate 8-bit image, each skipped when its size is unchanged (same size: this image), antialiased when
         * reducing; horizontal first unless the height loses more than twice as many pixels as the width (Pillow 13's
         * order; Pillow &lt;= 12 always ran horizontal first, which rounds differently when both sizes change).
         */
        public RgbImage resizedBicubic(int width, int height) {
            if (width <= 0 || height <= 0) throw new IllegalArgumentException("cannot resize to " + width + "x" + height);
            boolean verticalFirst = height < this.height && this.height - height > (this.width - width) * 2;
            RgbImage image = this;
            for (boolean horizontally : verticalFirst ? new boolean[] {false, true} : new boolean[] {true, false}) {
                int size = horizontally ? width : height;
                if (size != (horizontally ? image.width : image.height)) image = resampled(image, horizontally, size);
            }
            return image;
        }

        @Override
        public boolean equals(Object other) {
            return other instanceof RgbImage o && width == o.width && height == o.height && Arrays.equals(pixels, o.pixels);
        }

        @Override
        public int hashCode() {
            return (width * 31 + height) * 31 + Arrays.hashCode(pixels);
        }

        @Override
        public String toString() {
            return "RgbImage[" + width + "x" + height + "]";
        }
    }

    /** One pass of {@code ImagingResample{Horizontal,Vertical}_8bpc} along x or y, to {@code size} pixels. */
    private static RgbImage resampled(RgbImage image, boolean horizontally, int size) {
        int width = image.width();
        byte[] src = image.pixels();
        Filter filter = Filter.bicubic(horizontally ? width : image.height(), size);
        int outWidth = horizontally ? size : width;
        int outHeight = horizontally ? image.height() : size;
        int tapStride = horizontally ? 3 : width * 3;  // bytes between two taps of the filter
        byte[] out = new byte[outWidth * outHeight * 3];
        int o = 0;
        for (int y = 0; y < outHeight; y++) {
            for (int x = 0; x < outWidth; x++) {
                int index = horizontally ? x : y;
                int first = filter.first[index];
                int tap = horizontally ? (y * width + first) * 3 : (first * width + x) * 3;
                int r = HALF, g = HALF, b = HALF;  // 32-bit sums, as Pillow's C ints
                for (int k = index * filter.ksize, end = k + filter.count[index]; k < end; k++) {
                    int weight = filter.weights[k];
                    r += (src[tap] & 0xFF) * weight;
                    g += (src[tap + 1] & 0xFF) * weight;
                    b += (src[tap + 2] & 0xFF) * weight;
                    tap += tapStride;
                }
                out[o] = clip8(r);
                out[o + 1] = clip8(g);
                out[o + 2] = clip8(b);
                o += 3;
            }
        }
        return new RgbImage(outWidth, outHeight, out);
    }

    /** A fixed-point sum back to a byte, clamped (Pillow's {@code clip8}). */
    private static byte clip8(int sum) {
        return (byte) Math.min(Math.max(sum >> PRECISION_BITS, 0), 255);
    }

    /**
     * Pillow's bicubic weights for one axis ({@code precompute_coeffs} + {@code normalize_coeffs_8bpc}, box = the
     * whole axis): output pixel {@code i} reads input pixels {@code first[i] ..< first[i] + count[i]} with the
     * fixed-point weights {@code weights[i * ksize ..< i * ksize + count[i]]} (scaled by 2^22).
     */
    private record Filter(int ksize, int[] first, int[] count, int[] weights) {
        static Filter bicubic(int inSize, int outSize) {
            double support = 2.0;
            double scale = (double) inSize / outSize;
            double filterScale = Math.max(scale, 1.0);  // widen the kernel when reducing (antialiasing)
            double inverse = 1.0 / filterScale;  // Pillow multiplies by the inverse: dividing could round differently
            double radius = support * filterScale;
            int ksize = (int) Math.ceil(radius) * 2 + 1;
            int[] first = new int[outSize];
            int[] count = new int[outSize];
            int[] weights = new int[outSize * ksize];
            double[] taps = new double[ksize];
            for (int i = 0; i < outSize; i++) {
                double center = (i + 0.5) * scale;
                int lo = Math.max((int) (center - radius + 0.5), 0);  // (int) truncates toward zero, like C's
                int n = Math.min((int) (center + radius + 0.5), inSize) - lo;
                double total = 0.0;
                for (int x = 0; x < n; x++) {
                    taps[x] = kernel((x + lo - center + 0.5) * inverse);
                    total += taps[x];
                }
                for (int x = 0; x < n; x++) {
                    double w = total != 0 ? taps[x] / total : taps[x];
                    double fixed = w * (1 << PRECISION_BITS);
                    weights[i * ksize + x] = (int) (w < 0 ? fixed - 0.5 : fixed + 0.5);
                }
                first[i] = lo;
                count[i] = n;
            }
            return new Filter(ksize, first, count, weights);
        }

        /** Keys' cubic convolution kernel with a = -0.5, support 2, as Pillow evaluates it. */
        private static double kernel(double t) {
            double a = -0.5;
            double x = Math.abs(t);
            if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
            if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
            return 0;
        }
    }
}
