import Foundation

/// Which chunks of a pipeline stay loaded and which are streamed (loaded before use, released after).
public struct MemoryPlan: Equatable, Sendable {
    /// Chunk indices kept loaded: always a prefix 0..<k.
    public let resident: [Int]
    /// The remaining chunk indices, k..<n.
    public let streamed: [Int]
    /// Whether streamed loads run ahead (chunk i+1 loads while chunk i computes).
    public let overlap: Bool
    /// The budget in bytes, nil for none.
    public let budgetBytes: Int?

    /// Bytes in a megabyte, as the planner counts them.
    public static let bytesPerMB = 1 << 20

    public var summary: String {
        guard !streamed.isEmpty else { return "all chunks resident" }
        let mode = overlap ? "with overlap" : "without overlap (budget fits one streamed chunk)"
        return "\(resident.count) resident, \(streamed.count) streamed \(mode)"
    }
}

/// A budget below the largest chunk (or not a number of MB). `minimumMB`: the largest chunk, 1 decimal.
public struct MemoryPlanError: Error, CustomStringConvertible, LocalizedError {
    public let budgetMB: Double
    /// The largest chunk's name.
    public let chunk: String
    public let minimumMB: Double

    /// The refusal, naming the budget as the caller spells it (the CLI: `--budget`).
    public func message(budget: String = "memory_budget_mb") -> String {
        let minimum = String(format: "%.1f", minimumMB)
        guard budgetMB.isFinite else { return "\(budget) \(budgetMB) is not a number of MB: pass at least \(minimum)" }
        return "\(budget) \(String(format: "%g", budgetMB)) MB is smaller than the largest chunk (\(chunk), "
            + "\(minimum) MB): pass at least \(minimum)"
    }

    public var description: String { message() }
    public var errorDescription: String? { message() }
}

/// The longest resident prefix such that its bytes plus the streaming slot fit the budget (Python's
/// `plan_memory`).
///
/// Budget bytes = `Int(budgetMB * 1048576)` (truncating). No budget, or everything fits: all resident.
/// Otherwise the slot is the two largest remaining chunks (overlap) or the largest one; two slots are
/// tried first when `overlap` is allowed. `names` (one per chunk) name the largest chunk in the refusal.
public func planMemory(chunkBytes: [Int], budgetMB: Double?, overlap: Bool = true, names: [String] = [])
    throws -> MemoryPlan
{
    let all = Array(chunkBytes.indices)
    guard let budgetMB, let largest = chunkBytes.max() else {
        return MemoryPlan(resident: all, streamed: [], overlap: false, budgetBytes: nil)
    }
    let index = chunkBytes.firstIndex(of: largest) ?? 0
    let refusal = MemoryPlanError(
        budgetMB: budgetMB, chunk: names.indices.contains(index) ? names[index] : "chunk \(index)",
        minimumMB: Double(String(format: "%.1f", Double(largest) / Double(MemoryPlan.bytesPerMB))) ?? 0)
    guard budgetMB.isFinite else { throw refusal }
    let scaled = (budgetMB * Double(MemoryPlan.bytesPerMB)).rounded(.towardZero)
    let budget = scaled >= Double(Int.max) ? Int.max : Int(max(scaled, Double(Int.min)))
    guard budget >= largest else { throw refusal }
    if chunkBytes.reduce(0, +) <= budget {
        return MemoryPlan(resident: all, streamed: [], overlap: false, budgetBytes: budget)
    }
    for twoSlots in overlap ? [true, false] : [false] {
        for split in stride(from: chunkBytes.count - 1, through: 0, by: -1) {
            let rest = chunkBytes[split...].sorted()
            let overlapping = twoSlots && rest.count > 1
            let slot = overlapping ? rest.suffix(2).reduce(0, +) : rest[rest.count - 1]
            if chunkBytes[..<split].reduce(0, +) + slot <= budget {
                return MemoryPlan(
                    resident: Array(0..<split), streamed: Array(split..<chunkBytes.count), overlap: overlapping,
                    budgetBytes: budget)
            }
        }
    }
    return MemoryPlan(resident: [], streamed: all, overlap: false, budgetBytes: budget)
}

/// The plan for chunks of an artifact: the bytes each reads (`Manifest.weightBytes`), named in the refusal.
public func planMemory(
    chunks: [Manifest.Chunk], of manifest: Manifest, budgetMB: Double?, overlap: Bool = true
) throws -> MemoryPlan {
    try planMemory(
        chunkBytes: chunks.map(manifest.weightBytes), budgetMB: budgetMB, overlap: overlap, names: chunks.map(\.name))
}
