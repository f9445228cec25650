package dev.edgetrim.core;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;

/** A budget below the largest chunk (or not a finite number of MB); {@code minimumMB} is the largest chunk, 1 decimal. */
public final class MemoryPlanException extends ArtifactException {
    private final double budgetMB;
    private final String chunk;
    private final double minimumMB;

    public MemoryPlanException(double budgetMB, String chunk, double minimumMB) {
        super(message("memory_budget_mb", budgetMB, chunk, minimumMB));
        this.budgetMB = budgetMB;
        this.chunk = chunk;
        this.minimumMB = minimumMB;
    }

    public double budgetMB() {
        return budgetMB;
    }

    /** The largest chunk's name. */
    public String chunk() {
        return chunk;
    }

    public double minimumMB() {
        return minimumMB;
    }

    /** The refusal, naming the budget as the caller spells it (e.g. a settings field). */
    public String message(String budget) {
        return message(budget, budgetMB, chunk, minimumMB);
    }

    private static String message(String budget, double budgetMB, String chunk, double minimumMB) {
        String minimum = new BigDecimal(minimumMB).setScale(1, RoundingMode.HALF_EVEN).toPlainString();
        if (!Double.isFinite(budgetMB)) return budget + " " + budgetMB + " is not a number of MB: pass at least " + minimum;
        return budget + " " + formatG(budgetMB) + " MB is smaller than the largest chunk (" + chunk + ", " + minimum
                + " MB): pass at least " + minimum;
    }

    /** C's / Python's {@code %g}: 6 significant digits, trailing zeros dropped, exponent form below 1e-4 or from 1e6. */
    static String formatG(double value) {
        if (value == 0) return "0";
        BigDecimal rounded = new BigDecimal(value).round(new MathContext(6, RoundingMode.HALF_EVEN));
        int exponent = rounded.precision() - rounded.scale() - 1;
        if (exponent >= -4 && exponent < 6) return rounded.stripTrailingZeros().toPlainString();
        String mantissa = rounded.movePointLeft(exponent).stripTrailingZeros().toPlainString();
        return mantissa + "e" + (exponent < 0 ? "-" : "+") + (Math.abs(exponent) < 10 ? "0" : "") + Math.abs(exponent);
    }
}
