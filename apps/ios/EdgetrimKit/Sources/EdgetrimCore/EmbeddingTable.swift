import Foundation

/// The token-embedding table [V, D] of a language-model or vlm artifact (the `embedding` data file),
/// memory-mapped; `row` widens one looked-up row to float32 (Python's `edgetrim.runtime.embedding`).
///
/// Stored as the manifest's `llm.embedding_dtype` says: float32, float16, or int8 with one float32 scale per
/// row in the `embedding_scales` file [V] (symmetric: row = q * scale). Only the rows looked up are dequantized.
public struct EmbeddingTable: Sendable {
    /// .npy dtype of each `llm.embedding_dtype`.
    static let descrs = [
        Contract.embeddingFloat32: "<f4", Contract.embeddingFloat16: "<f2", Contract.embeddingInt8: "|i1",
    ]

    public let values: NPYArray
    /// Per-row scales [V] of an int8 table, nil for a float one.
    public let scales: [Float]?

    /// `values` [V, D] float32 / float16, or int8 with `scales` [V] float32.
    public init(values: NPYArray, scales: NPYArray?) throws {
        guard values.shape.count == 2 else {
            throw ArtifactError("the embedding table has shape \(values.shape), not [V, D]: re-export the artifact")
        }
        guard (values.dtype == "|i1") == (scales != nil) else {
            throw ArtifactError(
                "the embedding table is \(values.dtype) \(scales == nil ? "without" : "with") "
                    + "\(Contract.embeddingScales): int8 tables (and only they) need their per-row scales, "
                    + "re-export the artifact")
        }
        if let scales, scales.dtype != "<f4" || scales.shape != [values.shape[0]] {
            throw ArtifactError(
                "\(Contract.embeddingScales) is \(scales.dtype) \(scales.shape), not float32 [\(values.shape[0])] "
                    + "(one scale per row of the table): re-export the artifact")
        }
        self.values = values
        self.scales = scales?.floats
    }

    /// The artifact's table, as its manifest's `llm.embedding_dtype` says (`Manifest.parse` refuses an int8 table
    /// that lists no `embedding_scales` file).
    public init(artifact: Artifact) throws {
        let dtype = artifact.manifest.llm?.embeddingDtype ?? "unknown"
        let values = try NPYArray(contentsOf: try artifact.dataFile(Contract.embedding))
        guard Self.descrs[dtype] == values.dtype else {
            throw ArtifactError(
                "the embedding table is \(values.dtype), the manifest says \(dtype): re-export the artifact")
        }
        guard dtype == Contract.embeddingInt8 else {
            try self.init(values: values, scales: nil)
            return
        }
        try self.init(values: values, scales: try NPYArray(contentsOf: try artifact.dataFile(Contract.embeddingScales)))
    }

    /// Row `id` [D] as float32 (an int8 row times its scale).
    public func row(_ id: Int) throws -> [Float] {
        let row = try values.row(id)
        guard let scales else { return row }
        let scale = scales[id]
        return row.map { $0 * scale }
    }
}
