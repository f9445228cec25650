import XCTest

@testable import EdgetrimCore

/// The pure-Swift SHA-256 (always, whatever SHA256Hasher uses here) against FIPS 180 vectors and against
/// Python's digests of the conformance artifacts.
final class SHA256Tests: XCTestCase {
    func digest(_ bytes: [UInt8]) -> String {
        var hasher = PureSHA256()
        hasher.update(data: bytes)
        return SHA256Hasher.hex(hasher.finalize())
    }

    func testKnownVectors() {
        XCTAssertEqual(digest([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(digest(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(  // 56 bytes: the length no longer fits the first padding block
            digest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(
            digest(
                Array(
                    ("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                        + "mnopqrstnopqrstu").utf8)),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
        XCTAssertEqual(
            digest([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testStreamingInAnyPiecesGivesTheSameDigest() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let whole = digest(bytes)
        for piece in [1, 3, 55, 63, 64, 65, 129] {
            var hasher = PureSHA256()
            for start in stride(from: 0, to: bytes.count, by: piece) {
                hasher.update(data: bytes[start..<min(start + piece, bytes.count)])
            }
            XCTAssertEqual(SHA256Hasher.hex(hasher.finalize()), whole, "pieces of \(piece)")
        }
        var platform = SHA256Hasher()
        platform.update(bytes)
        XCTAssertEqual(SHA256Hasher.hex(platform.finalize()), whole)
    }

    /// Every file of every artifact, and the .mlpackage by the folder rule, hashed by PureSHA256.
    func testArtifactDigestsEqualPythons() throws {
        for name in ["vision-onnx", "vision-executorch", "vision-coreml"] {
            let root = Vectors.url("artifacts/\(name)")
            let artifact = try Artifact.read(at: root)
            for entry in artifact.chunks.flatMap(\.files) + artifact.manifest.files {
                XCTAssertEqual(
                    try pureDigest(root.appendingPathComponent(entry.path)), entry.sha256, "\(name)/\(entry.path)")
            }
        }
    }

    func pureDigest(_ url: URL) throws -> String {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder), isFolder.boolValue else {
            return digest(Array(try Data(contentsOf: url)))
        }
        let paths = try XCTUnwrap(FileManager.default.subpaths(atPath: url.path)).filter { path in
            var folder: ObjCBool = false
            let exists = FileManager.default.fileExists(
                atPath: url.appendingPathComponent(path).path, isDirectory: &folder)
            return exists && !folder.boolValue
        }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        var hasher = PureSHA256()
        for path in paths {
            var file = PureSHA256()
            file.update(data: try Data(contentsOf: url.appendingPathComponent(path)))
            hasher.update(data: Array(path.utf8) + file.finalize())
        }
        return SHA256Hasher.hex(hasher.finalize())
    }
}
