import XCTest

@testable import EdgetrimCore

/// planMemory against every case of apps/conformance/planner.json.
final class MemoryPlannerTests: XCTestCase {
    func testEveryPlannerCase() throws {
        let cases = try XCTUnwrap(Vectors.json("planner.json") as? [[String: Any]])
        XCTAssertFalse(cases.isEmpty)
        for (i, vector) in cases.enumerated() {
            let sizes = try XCTUnwrap(vector["chunk_bytes"] as? [Int])
            let budget = (vector["budget_mb"] as? NSNumber)?.doubleValue
            let overlap = try XCTUnwrap(vector["overlap"] as? Bool)
            let expected = try XCTUnwrap(vector["expected"] as? [String: Any])
            let label = "case \(i): \(sizes) @ \(budget.map { "\($0)" } ?? "none") MB"
            if expected["refused"] as? Bool == true {
                XCTAssertThrowsError(try planMemory(chunkBytes: sizes, budgetMB: budget, overlap: overlap), label) {
                    let refusal = $0 as? MemoryPlanError
                    XCTAssertEqual(refusal?.minimumMB, (expected["minimum_mb"] as? NSNumber)?.doubleValue, label)
                    XCTAssertTrue(
                        refusal?.description.hasSuffix("pass at least \(expected["minimum_mb"] ?? "")") ?? false)
                }
                continue
            }
            let plan = try planMemory(chunkBytes: sizes, budgetMB: budget, overlap: overlap)
            XCTAssertEqual(plan.resident, expected["resident"] as? [Int], label)
            XCTAssertEqual(plan.streamed, expected["streamed"] as? [Int], label)
            XCTAssertEqual(plan.overlap, expected["overlap"] as? Bool, label)
        }
    }

    func testBudgetBytesTruncateAndTheRefusalNamesTheLargestChunk() throws {
        XCTAssertEqual(try planMemory(chunkBytes: [1], budgetMB: 0.1).budgetBytes, 104_857)
        XCTAssertNil(try planMemory(chunkBytes: [1], budgetMB: nil).budgetBytes)
        XCTAssertThrowsError(try planMemory(chunkBytes: [1 << 20, 3 << 20], budgetMB: 2, names: ["a", "b"])) {
            XCTAssertEqual(
                "\($0)", "memory_budget_mb 2 MB is smaller than the largest chunk (b, 3.0 MB): pass at least 3.0")
        }
        XCTAssertThrowsError(try planMemory(chunkBytes: [1 << 20], budgetMB: .nan)) {
            XCTAssertEqual(($0 as? MemoryPlanError)?.minimumMB, 1.0)
        }
        XCTAssertEqual(try planMemory(chunkBytes: [1 << 20], budgetMB: 1e300).resident, [0])
    }
}
