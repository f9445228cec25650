import XCTest

@testable import EdgetrimCore

/// embedding.json: an int8 table and its per-row scales -> the float32 rows (q * scale) of the ids; an artifact
/// whose manifest says int8 without listing the scales is refused (`Manifest.parse` refuses such a manifest too).
final class EmbeddingTableTests: XCTestCase {
    func vector() throws -> [String: Any] { try XCTUnwrap(Vectors.json("embedding.json") as? [String: Any]) }

    func testInt8RowsAreTheStoredValuesTimesTheirScale() throws {
        let c = try vector()
        let values = try NPYArray(contentsOf: Vectors.url(try XCTUnwrap(c["table"] as? String)))
        let scales = try NPYArray(contentsOf: Vectors.url(try XCTUnwrap(c["scales"] as? String)))
        XCTAssertEqual(values.dtype, "|i1")
        XCTAssertEqual(values.shape, try XCTUnwrap(c["shape"] as? [Int]))
        XCTAssertEqual(values.floats, try XCTUnwrap(c["values"] as? [Int]).map(Float.init))
        XCTAssertEqual(scales.floats, try XCTUnwrap(c["scale_values"] as? [Double]).map(Float.init))
        let table = try EmbeddingTable(values: values, scales: scales)
        let ids = try XCTUnwrap(c["ids"] as? [Int])
        let rows = try XCTUnwrap(c["rows"] as? [[Double]])
        XCTAssertEqual(ids.count, rows.count)
        for (id, want) in zip(ids, rows) {
            XCTAssertEqual(try table.row(id), want.map(Float.init), "row \(id)")
        }
        XCTAssertThrowsError(try table.row(values.shape[0]))
    }

    /// The language-model manifest pointed at the vector files, its `embedding_dtype` and `files` as given.
    func artifact(dtype: String, roles: [String]) throws -> Artifact {
        let c = try vector()
        var manifest = try JSONDecoder().decode(Manifest.self, from: Vectors.data("manifests/language-model.json"))
        manifest.llm?.embeddingDtype = dtype
        let paths = [
            Contract.embedding: try XCTUnwrap(c["table"] as? String),
            Contract.embeddingScales: try XCTUnwrap(c["scales"] as? String),
        ]
        manifest.files = try roles.map { role in
            Manifest.FileEntry(path: try XCTUnwrap(paths[role]), role: role, bytes: 0, sha256: "")
        }
        return Artifact(root: Vectors.root, manifest: manifest)
    }

    func testAnArtifactReadsItsInt8TableAndRefusesOneWithoutScales() throws {
        let both = [Contract.embedding, Contract.embeddingScales]
        let table = try EmbeddingTable(artifact: artifact(dtype: Contract.embeddingInt8, roles: both))
        let rows = try XCTUnwrap(vector()["rows"] as? [[Double]])
        XCTAssertEqual(try table.row(3), rows[0].map(Float.init))

        XCTAssertThrowsError(
            try EmbeddingTable(artifact: artifact(dtype: Contract.embeddingInt8, roles: [Contract.embedding]))
        ) { error in
            XCTAssertTrue("\(error)".contains("lists no embedding_scales file"), "\(error)")
        }
        XCTAssertThrowsError(
            try EmbeddingTable(artifact: artifact(dtype: Contract.embeddingFloat16, roles: both))
        ) { error in
            XCTAssertTrue("\(error)".contains("the manifest says float16"), "\(error)")
        }
        let values = try NPYArray(contentsOf: Vectors.url(try XCTUnwrap(vector()["table"] as? String)))
        XCTAssertThrowsError(try EmbeddingTable(values: values, scales: nil))
        XCTAssertThrowsError(try EmbeddingTable(values: values, scales: values))  // scales must be float32 [V]
    }

    func blockVector() throws -> [String: Any] {
        try XCTUnwrap(Vectors.json("embedding_block.json") as? [String: Any])
    }

    /// embedding_block.json: an int8_block table (uint8 `q + 128`, a scale per block) -> (u - 128) * scale, exactly.
    func testInt8BlockRowsAreTheStoredValuesLessTheZeroPointTimesTheirBlockScale() throws {
        let c = try blockVector()
        let values = try NPYArray(contentsOf: Vectors.url(try XCTUnwrap(c["table"] as? String)))
        let scales = try NPYArray(contentsOf: Vectors.url(try XCTUnwrap(c["scales"] as? String)))
        XCTAssertEqual(values.dtype, "|u1")
        XCTAssertEqual(values.shape, try XCTUnwrap(c["shape"] as? [Int]))
        XCTAssertEqual(scales.shape, try XCTUnwrap(c["scales_shape"] as? [Int]))
        XCTAssertEqual(values.floats, try XCTUnwrap(c["values"] as? [Int]).map(Float.init))
        XCTAssertEqual(scales.floats, try XCTUnwrap(c["scale_values"] as? [Double]).map(Float.init))
        XCTAssertEqual(c["zero_point"] as? Int, Contract.embeddingZeroPoint)
        let table = try EmbeddingTable(values: values, scales: scales)
        let ids = try XCTUnwrap(c["ids"] as? [Int])
        let rows = try XCTUnwrap(c["rows"] as? [[Double]])
        XCTAssertEqual(ids.count, rows.count)
        for (id, want) in zip(ids, rows) {
            XCTAssertEqual(try table.row(id), want.map(Float.init), "row \(id)")
        }
        XCTAssertThrowsError(try EmbeddingTable(values: values, scales: values))  // scales must be float32 [V, G]
        XCTAssertThrowsError(try EmbeddingTable(values: values, scales: nil))
    }

    /// manifests/language-model-tied.json (quantized ONNX, head tied to the table) reads its int8_block table.
    func testTheTiedManifestReadsItsInt8BlockTable() throws {
        let c = try blockVector()
        var manifest = try Manifest.parse(Vectors.data("manifests/language-model-tied.json"))
        XCTAssertEqual(manifest.llm?.embeddingDtype, Contract.embeddingInt8Block)
        manifest.files = [
            Manifest.FileEntry(
                path: try XCTUnwrap(c["table"] as? String), role: Contract.embedding, bytes: 0, sha256: ""),
            Manifest.FileEntry(
                path: try XCTUnwrap(c["scales"] as? String), role: Contract.embeddingScales, bytes: 0, sha256: ""),
        ]
        let table = try EmbeddingTable(artifact: Artifact(root: Vectors.root, manifest: manifest))
        let ids = try XCTUnwrap(c["ids"] as? [Int])
        let rows = try XCTUnwrap(c["rows"] as? [[Double]])
        XCTAssertEqual(try table.row(ids[0]), rows[0].map(Float.init))
    }

    /// The tied head's programs read the table files: the memory planner counts them with the head, as Python's.
    func testTheMemoryPlannerCountsTheTiedTableWithTheHead() throws {
        let manifest = try Manifest.parse(Vectors.data("manifests/language-model-tied.json"))
        let head = try XCTUnwrap(manifest.chunks.first { $0.name == manifest.llm?.embeddingTied })
        let roles: Set<String> = [Contract.embedding, Contract.embeddingScales]
        let table = manifest.files.filter { roles.contains($0.role) }.reduce(0) { $0 + $1.bytes }
        XCTAssertGreaterThan(table, head.bytes)
        XCTAssertEqual(manifest.weightBytes(head), head.bytes + table)
        let other = try XCTUnwrap(manifest.chunks.first { $0.name != head.name })
        XCTAssertEqual(manifest.weightBytes(other), other.bytes)
        let tooSmall = Double(head.bytes + table - 1) / Double(MemoryPlan.bytesPerMB)
        XCTAssertThrowsError(try planMemory(chunks: [head], of: manifest, budgetMB: tooSmall))
    }
}
