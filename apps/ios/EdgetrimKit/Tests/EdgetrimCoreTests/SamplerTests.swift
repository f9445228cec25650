import EdgetrimCore
import XCTest

/// sampler.json: shift ratio and schedule, then sampling from a table of velocities (one per model evaluation).
final class SamplerTests: XCTestCase {
    static func cases() throws -> [[String: Any]] {
        try XCTUnwrap(Vectors.json("sampler.json") as? [[String: Any]])
    }

    static func assertClose(
        _ actual: [Double], _ expected: [Double], relative: Double = 0, absolute: Double = 0, _ name: String
    ) {
        XCTAssertEqual(actual.count, expected.count, name)
        for (a, e) in zip(actual, expected) {
            XCTAssertLessThanOrEqual(abs(a - e), max(absolute, relative * abs(e)), "\(name): \(a) vs \(e)")
        }
    }

    func testSchedules() throws {
        for c in try Self.cases() {
            let name = try XCTUnwrap(c["name"] as? String)
            let pixels = try XCTUnwrap(c["pixels"] as? [Int])
            let ratio = RectifiedFlow.shiftRatio(pixelHeight: pixels[0], pixelWidth: pixels[1], pixelFrames: pixels[2])
            Self.assertClose([ratio], [try XCTUnwrap(c["shift_ratio"] as? Double)], relative: 1e-9, name)
            let schedule = RectifiedFlow.timesteps(try XCTUnwrap(c["steps"] as? Int), ratio: ratio)
            Self.assertClose(schedule, try XCTUnwrap(c["schedule"] as? [Double]), relative: 1e-9, name)
        }
    }

    func testSampling() throws {
        let cases = try Self.cases()
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let name = try XCTUnwrap(c["name"] as? String)
            let expected = try XCTUnwrap(c["expected"] as? [String: Any])
            let table = try XCTUnwrap(c["velocities"] as? [[Double]]).map { $0.map(Float.init) }
            let noise = try XCTUnwrap(c["noise"] as? [Double]).map(Float.init)
            let rule = (c["lpl"] as? [String: Any]).map {
                LeapRule(
                    minSteps: $0["min_steps"] as! Int, patience: $0["patience"] as! Int,
                    threshold: $0["threshold"] as! Double)
            }
            var calls: [(t: Double, function: String)] = []
            let schedule = try XCTUnwrap(c["schedule"] as? [Double])
            let result = try RectifiedFlow.sample(
                velocity: { z, t, function in
                    XCTAssertEqual(z.count, noise.count)
                    calls.append((t, function))
                    return table[calls.count - 1]
                },
                noise: noise, schedule: schedule, mergeSteps: try XCTUnwrap(c["merge_steps"] as? Int),
                leapAt: c["leap_at"] as? Int, rule: rule)
            Self.assertClose(
                result.latent.map(Double.init), try XCTUnwrap(expected["latent"] as? [Double]), absolute: 1e-5, name)
            XCTAssertEqual(result.stepsRun, expected["steps_run"] as? Int, name)
            XCTAssertEqual(result.leapStep, expected["leap_step"] as? Int, name)
            XCTAssertEqual(result.functions, expected["functions"] as? [String], name)
            XCTAssertEqual(calls.map(\.function), result.functions, name)
            XCTAssertEqual(calls.map(\.t), Array(schedule.prefix(calls.count)), name)
            XCTAssertEqual(result.stepMs.count, result.stepsRun, name)
            Self.assertClose(
                result.similarities, try XCTUnwrap(expected["similarities"] as? [Double]), absolute: 1e-12, name)
        }
    }

    /// A fixed leap wins over an adaptive rule, which still records its similarities.
    func testFixedLeapWithRule() throws {
        let velocities: [[Float]] = [[1, 0], [0, 1], [1, 1], [1, 0]]
        var step = 0
        let result = try RectifiedFlow.sample(
            velocity: { _, _, _ in
                defer { step += 1 }
                return velocities[step]
            },
            noise: [0, 0], schedule: [1000, 750, 500, 250], leapAt: 2, rule: LeapRule(minSteps: 0, patience: 0))
        XCTAssertEqual(result.leapStep, 2)
        XCTAssertEqual(result.similarities.count, 2)
        XCTAssertEqual(result.latent, [0.25 + 0.5, 0.25 + 0.5])
    }

    func testPlanRefusals() throws {
        XCTAssertThrowsError(try RectifiedFlow.checkPlan(numSteps: 0, mergeSteps: 0, leapAt: nil))
        XCTAssertThrowsError(try RectifiedFlow.checkPlan(numSteps: 6, mergeSteps: 7, leapAt: nil))
        XCTAssertThrowsError(try RectifiedFlow.checkPlan(numSteps: 6, mergeSteps: -1, leapAt: nil))
        XCTAssertThrowsError(try RectifiedFlow.checkPlan(numSteps: 6, mergeSteps: 0, leapAt: 0))
        XCTAssertThrowsError(try RectifiedFlow.checkPlan(numSteps: 6, mergeSteps: 0, leapAt: 6))
        XCTAssertNoThrow(try RectifiedFlow.checkPlan(numSteps: 6, mergeSteps: 6, leapAt: 5))
        XCTAssertThrowsError(try RectifiedFlow.sample(velocity: { _, _, _ in [0] }, noise: [0, 0], schedule: [1000]))
    }

    func testGuidance() {
        XCTAssertEqual(RectifiedFlow.guided(unconditional: [1, 2], conditional: [3, 0], guidance: 7.5), [16, -13])
    }
}
