package dev.edgetrim.core;

import java.util.Arrays;

/**
 * A dense tensor as the core passes it between chunks: a shape and row-major values of one dtype (float32, int32 or
 * int64). Invariant: the product of the shape equals the number of values. Backends (ONNX Runtime, ExecuTorch) convert
 * to and from their own tensors at the edges. The arrays are shared, not copied: do not mutate them after handing over.
 */
public final class Tensor {
    private final int[] shape;
    private final Object values;

    private Tensor(int[] shape, Object values, int count) {
        long product = 1;
        for (int dim : shape) product *= dim;
        if (product != count) {
            throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " does not hold " + count + " values");
        }
        this.shape = shape.clone();
        this.values = values;
    }

    public static Tensor ofFloats(int[] shape, float[] values) {
        return new Tensor(shape, values, values.length);
    }

    public static Tensor ofInts(int[] shape, int[] values) {
        return new Tensor(shape, values, values.length);
    }

    public static Tensor ofLongs(int[] shape, long[] values) {
        return new Tensor(shape, values, values.length);
    }

    public int[] shape() {
        return shape.clone();
    }

    /** The contract's dtype name: float32, int32 or int64. */
    public String dtype() {
        return values instanceof float[] ? "float32" : values instanceof int[] ? "int32" : "int64";
    }

    public int count() {
        return values instanceof float[] f ? f.length : values instanceof int[] i ? i.length : ((long[]) values).length;
    }

    /** The values as float32 (converted from an integer dtype; the backing array for float32). */
    public float[] floats() {
        if (values instanceof float[] f) return f;
        float[] out = new float[count()];
        for (int i = 0; i < out.length; i++) out[i] = values instanceof int[] v ? v[i] : ((long[]) values)[i];
        return out;
    }

    /** The values as int64 (float32 truncated toward zero). */
    public long[] longs() {
        if (values instanceof long[] l) return l;
        long[] out = new long[count()];
        for (int i = 0; i < out.length; i++) out[i] = values instanceof int[] v ? v[i] : (long) ((float[]) values)[i];
        return out;
    }

    @Override
    public boolean equals(Object other) {
        return other instanceof Tensor t && Arrays.equals(shape, t.shape) && dtype().equals(t.dtype())
                && Arrays.deepEquals(new Object[] {values}, new Object[] {t.values});
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(shape) * 31 + Arrays.deepHashCode(new Object[] {values});
    }

    @Override
    public String toString() {
        return dtype() + Arrays.toString(shape) + " " + Arrays.deepToString(new Object[] {values});
    }
}
