import XCTest

@testable import EdgetrimCore

/// The conformance artifacts verify (every digest equals the manifest's) and every mutation of damaged.json
/// (of an artifact, or of a manifest alone) gets Python's verdict for the same reason.
final class VerificationTests: XCTestCase {
    let artifacts = ["vision-onnx", "vision-executorch", "vision-coreml"]

    func testArtifactsVerifyAndEveryDigestEqualsTheManifest() throws {
        for name in artifacts {
            let root = Vectors.url("artifacts/\(name)")
            let artifact = try Artifact.open(at: root)
            XCTAssertEqual(artifact.kind, Contract.visionEncoder)
            for entry in artifact.chunks.flatMap(\.files) + artifact.manifest.files {
                let (bytes, sha256) = try Artifact.digest(of: root.appendingPathComponent(entry.path))
                XCTAssertEqual(bytes, entry.bytes, "\(name)/\(entry.path)")
                XCTAssertEqual(sha256, entry.sha256, "\(name)/\(entry.path)")
            }
        }
    }

    func testEveryDamagedCase() throws {
        let cases = try XCTUnwrap(Vectors.json("damaged.json") as? [[String: Any]])
        XCTAssertFalse(cases.isEmpty)
        for vector in cases {
            let name = vector["name"] as? String ?? "?"
            let work = try temporaryFolder()
            defer { try? FileManager.default.removeItem(at: work) }
            let root = work.appendingPathComponent("artifact")
            if let manifest = vector["manifest"] as? String {  // a manifest of manifests/ alone
                try FileManager.default.createDirectory(at: root, withIntermediateDirectories: false)
                try FileManager.default.copyItem(
                    at: Vectors.url("manifests/\(manifest).json"), to: root.appendingPathComponent(Contract.manifest))
            } else {
                try FileManager.default.copyItem(
                    at: Vectors.url("artifacts/\(try XCTUnwrap(vector["artifact"] as? String))"), to: root)
            }
            try mutate(
                root, try XCTUnwrap(vector["mutation"] as? [String: Any]),
                outside: work.appendingPathComponent("moved-out"))
            do {
                _ = try Artifact.open(at: root)
                XCTAssertEqual(vector["verdict"] as? String, "accepted", "\(name): accepted")
            } catch let error as VerificationError {
                XCTAssertEqual(vector["verdict"] as? String, "refused", "\(name): refused (\(error))")
                XCTAssertEqual(error.reason, vector["reason"] as? String, "\(name): \(error)")
            }
        }
    }

    /// An int8 embedding table needs its per-row scales listed: refused on reading, before any file is touched.
    func testAnInt8EmbeddingWithoutScalesIsRefusedOnReading() throws {
        let valid = try XCTUnwrap(Vectors.json("manifests/language-model.json") as? [String: Any])
        func parse(dtype: String, scales: Bool) throws -> Manifest {
            var manifest = valid
            var llm = try XCTUnwrap(manifest["llm"] as? [String: Any])
            llm["embedding_dtype"] = dtype
            manifest["llm"] = llm
            if scales {
                let entry: [String: Any] = [
                    "path": "embed_scales.npy", "role": Contract.embeddingScales, "bytes": 1, "sha256": "0",
                ]
                manifest["files"] = (manifest["files"] as? [Any] ?? []) + [entry]
            }
            return try Manifest.parse(try JSONSerialization.data(withJSONObject: manifest), path: "m.json")
        }
        XCTAssertThrowsError(try parse(dtype: Contract.embeddingInt8, scales: false)) {
            XCTAssertEqual(($0 as? VerificationError)?.reason, "manifest")
            XCTAssertEqual(
                "\($0)",
                "m.json: llm.embedding_dtype is int8 but the artifact lists no embedding_scales file "
                    + "(the table's per-row scales): the manifest is damaged, re-export the artifact")
        }
        XCTAssertEqual(try parse(dtype: Contract.embeddingInt8, scales: true).llm?.embeddingDtype, "int8")
        XCTAssertEqual(try parse(dtype: Contract.embeddingFloat16, scales: false).llm?.embeddingDtype, "float16")
    }

    func testWrongKindAndMissingFolder() throws {
        XCTAssertThrowsError(try Artifact.open(at: Vectors.url("artifacts/vision-onnx"), kinds: [Contract.vlm])) {
            XCTAssertEqual(($0 as? VerificationError)?.reason, "kind")
        }
        XCTAssertThrowsError(try Artifact.open(at: Vectors.url("artifacts/none"))) {
            XCTAssertEqual(($0 as? VerificationError)?.reason, "manifest")
        }
    }

    func testManifestChecksInPythonsOrder() throws {
        let valid = try XCTUnwrap(Vectors.json("artifacts/vision-onnx/manifest.json") as? [String: Any])
        func reason(_ change: (inout [String: Any]) -> Void) -> String? {
            var manifest = valid
            change(&manifest)
            do {
                _ = try Manifest.parse(try JSONSerialization.data(withJSONObject: manifest))
                return nil
            } catch {
                return (error as? VerificationError)?.reason
            }
        }
        XCTAssertNil(reason { _ in })
        XCTAssertEqual(
            reason {
                $0["schema_version"] = 99
                $0["chunks"] = nil
            }, "schema_version")
        XCTAssertEqual(reason { $0["schema_version"] = true }, "manifest")
        XCTAssertEqual(reason { $0["schema_version"] = 0 }, "manifest")
        XCTAssertEqual(reason { $0["kind"] = nil }, nil)
        XCTAssertEqual(reason { $0["kind"] = Contract.vlm }, "manifest")
        XCTAssertEqual(
            reason { $0["files"] = [["path": "a/../../b", "role": "x", "bytes": 1, "sha256": "0"]] }, "outside")
        XCTAssertEqual(reason { $0["files"] = [["path": "a\\b", "role": "x", "bytes": 1, "sha256": "0"]] }, "outside")
        XCTAssertEqual(reason { $0["files"] = [["path": "b", "role": "x", "bytes": "1", "sha256": "0"]] }, "manifest")
        XCTAssertEqual(reason { $0["source"] = [:] }, "manifest")
        XCTAssertEqual(
            reason {
                var chunks = $0["chunks"] as? [[String: Any]] ?? []
                chunks[0]["functions"] = ["plain": ["file": "elsewhere.onnx"]]
                $0["chunks"] = chunks
            }, "manifest")
    }

    func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("edgetrim-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Applies one mutation of damaged.json as its README says.
    func mutate(_ root: URL, _ mutation: [String: Any], outside: URL) throws {
        let target = root.appendingPathComponent(mutation["file"] as? String ?? Contract.manifest)
        switch mutation["op"] as? String {
        case "none":
            return
        case "flip_byte":
            var data = try Data(contentsOf: target)
            let offset = try XCTUnwrap(mutation["offset"] as? Int)
            data[offset] ^= 0xFF
            try data.write(to: target)
        case "truncate":
            try Data(contentsOf: target).prefix(try XCTUnwrap(mutation["bytes"] as? Int)).write(to: target)
        case "delete":
            try FileManager.default.removeItem(at: target)
        case "link_outside":
            try FileManager.default.moveItem(at: target, to: outside)
            try FileManager.default.createSymbolicLink(at: target, withDestinationURL: outside)
        case "write":
            try Data(try XCTUnwrap(mutation["text"] as? String).utf8).write(to: target)
        case "set", "delete_key":
            let url = root.appendingPathComponent(Contract.manifest)
            let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
            let path = try XCTUnwrap(mutation["path"] as? [Any])
            let changed = try setting(
                manifest, at: path[...], to: mutation["op"] as? String == "set" ? mutation["value"] : nil)
            try JSONSerialization.data(withJSONObject: changed).write(to: url)
        default:
            XCTFail("unknown mutation \(mutation)")
        }
    }

    /// `node` with the value at `path` replaced by `value` (nil: the key deleted).
    func setting(_ node: Any, at path: ArraySlice<Any>, to value: Any?) throws -> Any {
        let key = try XCTUnwrap(path.first)
        let rest = path.dropFirst()
        if var list = node as? [Any], let index = key as? Int {
            list[index] = rest.isEmpty ? try XCTUnwrap(value) : try setting(list[index], at: rest, to: value)
            return list
        }
        var object = try XCTUnwrap(node as? [String: Any])
        let name = try XCTUnwrap(key as? String)
        object[name] = rest.isEmpty ? value : try setting(try XCTUnwrap(object[name]), at: rest, to: value)
        return object
    }
}
