import Foundation

/// A sampling plan that cannot run; the message names the fix.
public struct SamplerError: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// Adaptive LPL: leap once the cosine similarity of consecutive velocities stalls.
///
/// From the second observed step on, s_i = cos(v_i, v_{i-1}) (float64) improves when s_i > best + threshold (then
/// best = s_i and the stalls reset), otherwise it counts a stall. Leap at the first step i >= minSteps with
/// stalls >= patience.
public struct LeapRule {
    public var minSteps: Int
    public var patience: Int
    public var threshold: Double
    public private(set) var best = -Double.infinity
    public private(set) var stalls = 0
    public private(set) var history: [Double] = []  // s_i of each step after the first
    private var previous: [Float]?

    public init(minSteps: Int = 10, patience: Int = 3, threshold: Double = 1e-3) {
        self.minSteps = minSteps
        self.patience = patience
        self.threshold = threshold
    }

    /// Records the velocity of `step`; true when sampling should leap at this step.
    public mutating func observe(step: Int, velocity: [Float]) -> Bool {
        if let previous {
            let similarity = Self.cosine(velocity, previous)
            history.append(similarity)
            if similarity > best + threshold {
                (best, stalls) = (similarity, 0)
            } else {
                stalls += 1
            }
        }
        previous = velocity
        return step >= minSteps && stalls >= patience
    }

    private static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot = 0.0
        var aa = 0.0
        var bb = 0.0
        for (x, y) in zip(a, b) {
            let (x, y) = (Double(x), Double(y))
            dot += x * y
            aa += x * x
            bb += y * y
        }
        return dot / max(aa.squareRoot() * bb.squareRoot(), 1e-30)
    }
}

/// One sampling run: the latent (flat, the noise's layout), model evaluations, where LPL leapt, per-step details.
public struct SampleResult {
    public var latent: [Float]
    public var stepsRun: Int  // model evaluations (a classifier-free-guidance pair counts once)
    public var leapStep: Int?  // the step at which LPL leapt; nil: all steps ran
    public var functions: [String]  // the denoiser function of each evaluated step: "tdtm" or "plain"
    public var stepMs: [Double]  // each evaluation's time
    public var similarities: [Double]  // adaptive LPL's cosine similarities (empty without a rule)
}

/// Open-Sora 1.2 rectified-flow sampling with TDTM steps and LPL, exactly as edgetrim's Python runtime (sampler.py).
///
/// Schedule: t_i = (1 - i / N) * 1000 for i < N, each shifted by t' = r t / (1 + (r - 1) t) on t / 1000. Step i:
/// z += v_i * (t_i - t_{i+1}) / 1000 (t_N = 0), the factor rounded to float32 as the latent is float32. Steps
/// i < mergeSteps use the "tdtm" function, later ones "plain". LPL at step k: z_0 = z + v_k * t_k / 1000 ends sampling
/// after k + 1 evaluations; fixed at `leapAt`, or adaptive by a `LeapRule`.
public enum RectifiedFlow {
    public static let numTimesteps = 1000.0
    public static let baseResolution = 512 * 512
    public static let tdtm = Contract.tdtm, plain = Contract.plain

    /// The schedule's shift r: sqrt(H * W / 512^2) * sqrt(frames / 17 * 5) (integer division; 1 frame: 1).
    public static func shiftRatio(
        pixelHeight: Int, pixelWidth: Int, pixelFrames: Int, baseResolution: Int = baseResolution
    ) -> Double {
        let frames = pixelFrames == 1 ? 1 : pixelFrames / 17 * 5
        return (Double(pixelHeight * pixelWidth) / Double(baseResolution)).squareRoot() * Double(frames).squareRoot()
    }

    /// [N] shifted timesteps in (0, numTimesteps], descending.
    public static func timesteps(_ numSteps: Int, ratio: Double, numTimesteps: Double = numTimesteps) -> [Double] {
        (0..<numSteps).map { i in
            let t = 1.0 - Double(i) / Double(numSteps)
            return ratio * t / (1.0 + (ratio - 1.0) * t) * numTimesteps
        }
    }

    /// Refuses a plan the sampler cannot run: steps >= 1, mergeSteps in 0...steps, leapAt in 1...steps - 1.
    public static func checkPlan(numSteps: Int, mergeSteps: Int, leapAt: Int?) throws {
        guard numSteps >= 1 else {
            throw SamplerError("steps \(numSteps) must be at least 1: Open-Sora 1.2 uses 30")
        }
        guard (0...numSteps).contains(mergeSteps) else {
            throw SamplerError("mergeSteps \(mergeSteps) is outside 0...\(numSteps) (steps): e.g. mergeSteps 15")
        }
        if let leapAt, !(1..<numSteps).contains(leapAt) {
            throw SamplerError("leapAt \(leapAt) is outside 1...\(numSteps - 1) (steps \(numSteps)): e.g. leapAt 15")
        }
    }

    /// Classifier-free guidance v_u + g (v_c - v_u), in float32.
    public static func guided(unconditional: [Float], conditional: [Float], guidance: Double) -> [Float] {
        let g = Float(guidance)
        return zip(unconditional, conditional).map { u, c in u + g * (c - u) }
    }

    /// Euler sampling from `noise` over `schedule` (descending timesteps); `velocity(z, t, function)` is the guided
    /// velocity, as many values as the latent. `progress` sees each evaluated step.
    public static func sample(
        velocity: ([Float], Double, String) throws -> [Float],
        noise: [Float],
        schedule: [Double],
        mergeSteps: Int = 0,
        leapAt: Int? = nil,
        rule: LeapRule? = nil,
        numTimesteps: Double = numTimesteps,
        progress: (Int) -> Void = { _ in }
    ) throws -> SampleResult {
        let n = schedule.count
        try checkPlan(numSteps: n, mergeSteps: mergeSteps, leapAt: leapAt)
        let clock = ContinuousClock()
        var z = noise
        var rule = rule
        var functions: [String] = []
        var stepMs: [Double] = []
        var leap: Int?
        for (i, t) in schedule.enumerated() {
            let function = i < mergeSteps ? tdtm : plain
            let start = clock.now
            let v = try velocity(z, t, function)
            stepMs.append((clock.now - start) / .milliseconds(1))
            guard v.count == z.count else {
                throw SamplerError(
                    "the velocity has \(v.count) values, the latent \(z.count): the denoiser's output does not match"
                )
            }
            functions.append(function)
            progress(i)
            let adaptive = rule?.observe(step: i, velocity: v) ?? false
            let leaps = leapAt.map { $0 == i } ?? (adaptive && i < n - 1)
            let dt = leaps || i == n - 1 ? t : t - schedule[i + 1]
            let scale = Float(dt / numTimesteps)
            z = zip(z, v).map { z, v in z + v * scale }
            if leaps {
                leap = i
                break
            }
        }
        return SampleResult(
            latent: z, stepsRun: functions.count, leapStep: leap, functions: functions, stepMs: stepMs,
            similarities: rule?.history ?? [])
    }
}
