import XCTest

@testable import EdgetrimCore

final class NPYTests: XCTestCase {
    /// Every npy.json case: float32 and float16 files read back to the values NumPy wrote.
    func testDataFilesReadAsNumPyWroteThem() throws {
        let cases = try XCTUnwrap(Vectors.json("npy.json") as? [[String: Any]])
        XCTAssertEqual(cases.count, 2)
        for c in cases {
            let array = try NPYArray(contentsOf: Vectors.url(try XCTUnwrap(c["file"] as? String)))
            let want = try XCTUnwrap(c["values"] as? [Double]).map(Float.init)
            XCTAssertEqual(array.shape, try XCTUnwrap(c["shape"] as? [Int]))
            XCTAssertEqual(array.floats, want)
            XCTAssertEqual(try array.row(1), Array(want[3..<6]))
            XCTAssertEqual(array.floats[1].sign, .minus)  // -0.0 keeps its sign
        }
    }

    func testNotAnArrayIsRefused() {
        XCTAssertThrowsError(try NPYArray(data: Data("not numpy".utf8)))
        XCTAssertThrowsError(try NPYArray(contentsOf: Vectors.url("npy/float32.npy")).row(5))
    }
}
