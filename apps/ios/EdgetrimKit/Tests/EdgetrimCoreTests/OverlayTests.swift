import XCTest
import EdgetrimCore

final class OverlayTests: XCTestCase {
    /// Every case of overlay.json: positions -> (partition, row, col) and the count kept per partition.
    func testConformanceVectors() throws {
        let cases = try XCTUnwrap(Vectors.json("overlay.json") as? [[String: Any]])
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let side = try XCTUnwrap(c["side"] as? Int)
            let cells = keptCells(positions: try XCTUnwrap(c["positions"] as? [Int]), side: side)
            let expected = try XCTUnwrap(c["cells"] as? [[Int]]).map { KeptCell(partition: $0[0], row: $0[1], col: $0[2]) }
            XCTAssertEqual(cells, expected, "side \(side)")
            XCTAssertEqual(keptCounts(cells, partitions: try XCTUnwrap(c["partitions"] as? Int)),
                           try XCTUnwrap(c["kept"] as? [Int]), "side \(side)")
        }
    }

    func testMapping() {
        let cells = keptCells(positions: [0, 5, 9, 17], side: 3)
        XCTAssertEqual(cells, [KeptCell(partition: 0, row: 0, col: 0), KeptCell(partition: 0, row: 1, col: 2),
                               KeptCell(partition: 1, row: 0, col: 0), KeptCell(partition: 1, row: 2, col: 2)])
        XCTAssertEqual(keptCounts(cells, partitions: 3), [2, 2, 0])
    }
}
