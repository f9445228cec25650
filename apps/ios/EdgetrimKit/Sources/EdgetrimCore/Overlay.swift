/// A kept token's place for the kept-token overlay: its partition (0 = the full view, then the grid
/// cells row-major) and its patch's row and column inside that view.
public struct KeptCell: Equatable, Hashable, Sendable {
    public let partition: Int
    public let row: Int
    public let col: Int

    public init(partition: Int, row: Int, col: Int) {
        self.partition = partition
        self.row = row
        self.col = col
    }
}

/// Flat kept positions `p * N + row * side + col` (N = side^2 patches per view) -> cells, in order
/// (edgetrim/runtime/overlay.py `kept_cells`).
public func keptCells(positions: [Int], side: Int) -> [KeptCell] {
    precondition(side > 0, "patches per side must be positive")
    let n = side * side
    return positions.map { p in
        precondition(p >= 0, "kept position \(p) is negative")
        return KeptCell(partition: p / n, row: p % n / side, col: p % side)
    }
}

/// How many tokens each of the `partitions` views keeps (index = partition).
public func keptCounts(_ cells: [KeptCell], partitions: Int) -> [Int] {
    var counts = [Int](repeating: 0, count: partitions)
    for cell in cells {
        precondition(cell.partition < partitions, "kept cell in partition \(cell.partition) of \(partitions)")
        counts[cell.partition] += 1
    }
    return counts
}
