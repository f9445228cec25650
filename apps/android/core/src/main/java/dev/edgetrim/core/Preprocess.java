package dev.edgetrim.core;

import dev.edgetrim.core.Resample.RgbImage;
import java.util.ArrayList;
import java.util.List;

/**
 * AnyRes preprocessing with a static grid, equal to the Python runtime's ({@code edgetrim/runtime/preprocess.py}).
 *
 * <p>Views: the full image squashed to S x S, then (for a grid of more than one cell) the image fitted into
 * (cols*S) x (rows*S) keeping its aspect ratio, centred on black and cut into rows x cols cells, row-major. Resizing
 * is Pillow's bicubic, byte for byte ({@link RgbImage#resizedBicubic}). Immutable.
 */
public final class Preprocess {
    private final int imageSize;
    private final int rows;
    private final int cols;
    private final float[] mean;
    private final float[] std;

    /**
     * From the manifest's {@code preprocessing} numbers: {@code image_size} (S), {@code grid} ([rows, cols]), and the
     * per-channel (R, G, B) {@code mean} and {@code std}, applied as {@code (x / 255 - mean) / std} in float32.
     */
    public Preprocess(int imageSize, int rows, int cols, List<Double> mean, List<Double> std) {
        if (imageSize <= 0 || rows <= 0 || cols <= 0) {
            throw new IllegalArgumentException("image size and grid must be positive, not " + imageSize + " and "
                    + rows + "x" + cols);
        }
        if (mean.size() != 3 || std.size() != 3) {
            throw new IllegalArgumentException("mean and std need one value per RGB channel, not " + mean + " and " + std);
        }
        this.imageSize = imageSize;
        this.rows = rows;
        this.cols = cols;
        this.mean = new float[3];
        this.std = new float[3];
        for (int c = 0; c < 3; c++) {
            this.mean[c] = mean.get(c).floatValue();
            this.std[c] = std.get(c).floatValue();
        }
    }

    /** S, the side of every view. */
    public int imageSize() {
        return imageSize;
    }

    public int rows() {
        return rows;
    }

    public int cols() {
        return cols;
    }

    /** P, the number of views: the full view, plus rows * cols cells unless the grid is 1x1. */
    public int partitions() {
        return rows * cols > 1 ? 1 + rows * cols : 1;
    }

    /** The P views fed to the encoder, each S x S: the full view, then the cells row-major. */
    public List<RgbImage> views(RgbImage image) {
        int s = imageSize;
        List<RgbImage> out = new ArrayList<>();
        out.add(image.resizedBicubic(s, s));
        if (partitions() > 1) {
            RgbImage canvas = fitted(image, cols * s, rows * s);
            for (int row = 0; row < rows; row++) {
                for (int col = 0; col < cols; col++) out.add(canvas.cropped(col * s, row * s, s, s));
            }
        }
        return List.copyOf(out);
    }

    /** {@code pixel_values}: float32 [1, P, 3, S, S], the views normalized per channel, channels first. */
    public Tensor pixelValues(RgbImage image) {
        List<RgbImage> views = views(image);
        int plane = imageSize * imageSize;
        float[] values = new float[views.size() * 3 * plane];
        for (int p = 0; p < views.size(); p++) {
            byte[] pixels = views.get(p).pixels();
            for (int c = 0; c < 3; c++) {
                int base = (p * 3 + c) * plane;
                for (int i = 0; i < plane; i++) values[base + i] = ((pixels[i * 3 + c] & 0xFF) / 255f - mean[c]) / std[c];
            }
        }
        return Tensor.ofFloats(new int[] {1, views.size(), 3, imageSize, imageSize}, values);
    }

    /** Python's {@code round(x)} for a float: to the nearest integer, halves to even ({@code round(2.5) == 2}). */
    public static int pythonRound(double x) {
        return (int) Math.rint(x);
    }

    /**
     * The image resized to fit {@code width} x {@code height} keeping its aspect ratio, centred on a black canvas
     * (LLaVA-NeXT's resize-and-pad; sizes rounded with Python's {@code round}).
     */
    private static RgbImage fitted(RgbImage image, int width, int height) {
        double scale = Math.min((double) width / image.width(), (double) height / image.height());
        int w = Math.max(1, pythonRound(image.width() * scale));
        int h = Math.max(1, pythonRound(image.height() * scale));
        return image.resizedBicubic(w, h).padded(width, height, (width - w) / 2, (height - h) / 2);
    }
}
