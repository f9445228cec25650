import Foundation

/// The token-embedding table [V, D] of a language-model or vlm artifact (the `embedding` data file),
/// memory-mapped; `row` widens one looked-up row to float32 (Python's `edgetrim.runtime.embedding`).
///
/// Stored as the manifest's `llm.embedding_dtype` says: float32, float16, or int8 with one float32 scale per
/// row in the `embedding_scales` file [V] (symmetric: row = q * scale); int8_block (quantized ONNX, the LM head
/// tied to the table): `q + 128` in uint8 [V, D] with one float32 scale per block of D / G values in the
/// `embedding_scales` file [V, G] (row block j = (u - 128) * scales[j]), the very bytes the head chunk's
/// MatMulNBits reads as its weight. Only the rows looked up are dequantized.
public struct EmbeddingTable: Sendable {
    /// .npy dtype of each `llm.embedding_dtype`.
    static let descrs = [
        Contract.embeddingFloat32: "<f4", Contract.embeddingFloat16: "<f2", Contract.embeddingInt8: "|i1",
        Contract.embeddingInt8Block: "|u1",
    ]

    public let values: NPYArray
    /// Scales of an int8 table ([V]) or an int8_block one ([V, G], row-major), nil for a float one.
    public let scales: [Float]?
    /// Scales per row: 1 (int8), G (int8_block), 0 (float).
    let scalesPerRow: Int

    /// `values` [V, D] float32 / float16; int8 with `scales` [V] float32; or uint8 (`q + 128`) with `scales`
    /// [V, G] float32, G dividing D.
    public init(values: NPYArray, scales: NPYArray?) throws {
        guard values.shape.count == 2 else {
            throw ArtifactError("the embedding table has shape \(values.shape), not [V, D]: re-export the artifact")
        }
        let quantized = values.dtype == "|i1" || values.dtype == "|u1"
        guard quantized == (scales != nil) else {
            throw ArtifactError(
                "the embedding table is \(values.dtype) \(scales == nil ? "without" : "with") "
                    + "\(Contract.embeddingScales): int8 tables (and only they) need their scales, "
                    + "re-export the artifact")
        }
        var perRow = 0
        if let scales {
            let (v, d) = (values.shape[0], values.shape[1])
            let fits: Bool
            let wanted: String
            if values.dtype == "|i1" {
                fits = scales.shape == [v]
                wanted = "[\(v)] (one scale per row of the table)"
                perRow = 1
            } else {
                perRow = scales.shape.count == 2 ? scales.shape[1] : 0
                fits = scales.shape.count == 2 && scales.shape[0] == v && perRow > 0 && d % perRow == 0
                wanted = "[\(v), G] with G dividing \(d) (one scale per block of each row)"
            }
            guard scales.dtype == "<f4", fits else {
                throw ArtifactError(
                    "\(Contract.embeddingScales) is \(scales.dtype) \(scales.shape), not float32 \(wanted): "
                        + "re-export the artifact")
            }
        }
        self.values = values
        self.scales = scales?.floats
        self.scalesPerRow = perRow
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
        guard dtype == Contract.embeddingInt8 || dtype == Contract.embeddingInt8Block else {
            try self.init(values: values, scales: nil)
            return
        }
        try self.init(values: values, scales: try NPYArray(contentsOf: try artifact.dataFile(Contract.embeddingScales)))
    }

    /// Row `id` [D] as float32 (an int8 row times its scale; an int8_block row less 128, times its blocks' scales).
    public func row(_ id: Int) throws -> [Float] {
        let row = try values.row(id)
        guard let scales else { return row }
        if values.dtype == "|i1" {
            let scale = scales[id]
            return row.map { $0 * scale }
        }
        let block = row.count / scalesPerRow
        let zero = Float(Contract.embeddingZeroPoint)
        return row.indices.map { i in (row[i] - zero) * scales[id * scalesPerRow + i / block] }
    }
}
