import XCTest

/// The built edgetrim-kit binary on apps/conformance/artifacts/vision-onnx.
final class CommandLineTests: XCTestCase {
    /// The products folder holding edgetrim-kit (beside the test bundle).
    var binary: URL? {
        ([Bundle.main.bundleURL] + Bundle.allBundles.map { $0.bundleURL.deletingLastPathComponent() })
            .map { $0.appendingPathComponent("edgetrim-kit") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    func run(_ arguments: String...) throws -> (status: Int32, out: String, err: String) { try runList(arguments) }

    func runList(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = try XCTUnwrap(binary, "build edgetrim-kit first (swift build)")
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (
            process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self)
        )
    }

    let artifact = Vectors.url("artifacts/vision-onnx").path

    /// The bytes of chunk `name` as edgetrim-kit prints them, read from the manifest (vectors are regenerated).
    func printedSize(_ name: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: artifact).appendingPathComponent("manifest.json"))
        let manifest = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        let chunks = try XCTUnwrap(manifest["chunks"] as? [[String: Any]])
        let chunk = try XCTUnwrap(chunks.first { $0["name"] as? String == name })
        let bytes = try XCTUnwrap(chunk["files"] as? [[String: Any]]).compactMap { $0["bytes"] as? Int }.reduce(0, +)
        return String(format: "%.1f KB", Double(bytes) / 1024)
    }

    func testVerifyPrintsTheSummary() throws {
        let (status, out, err) = try run("verify", artifact)
        XCTAssertEqual(status, 0, err)
        for expected in [
            "kind       vision-encoder", "target     onnx", "precision  fp32",
            "source     tiny-clip (random weights", "chunks     3", "  embed ", "  blocks_00-02 ", "  head ",
            "pipelines", "  vision  embed -> blocks_00-02 -> head",
        ] {
            XCTAssertTrue(out.contains(expected), "\(expected) in\n\(out)")
        }
        XCTAssertEqual(err, "")
    }

    func testPlanPrintsResidentAndStreamedChunks() throws {
        let all = try run("plan", artifact, "--budget", "1")
        XCTAssertEqual(all.status, 0, all.err)
        XCTAssertTrue(all.out.contains("all chunks resident"), all.out)
        let streamed = try run("plan", artifact, "--pipeline", "vision", "--budget", "0.47")
        XCTAssertEqual(streamed.status, 0, streamed.err)
        XCTAssertTrue(streamed.out.contains("0 resident, 3 streamed with overlap"), streamed.out)
        XCTAssertTrue(streamed.out.contains("  streamed  blocks_00-02  \(try printedSize("blocks_00-02"))"), streamed.out)
        let one = try run("plan", artifact, "--budget", "0.45")
        XCTAssertTrue(one.out.contains("3 streamed without overlap"), one.out)
    }

    func testErrorsAreOneLineAndExit2() throws {
        let small = try run("plan", artifact, "--budget", "0.3")
        XCTAssertEqual(small.status, 2)
        XCTAssertEqual(
            small.err,
            "error: --budget 0.3 MB is smaller than the largest chunk (blocks_00-02, 0.4 MB): pass at least 0.4\n")
        XCTAssertEqual(small.out, "")
        for arguments in [["verify", "/no/such/artifact"], ["plan", artifact, "--budget", "1", "--pipeline", "nope"]] {
            let failed = try runList(arguments)
            XCTAssertEqual(failed.status, 2)
            XCTAssertTrue(failed.err.hasPrefix("error: "), failed.err)
            XCTAssertEqual(failed.err.filter { $0 == "\n" }.count, 1, failed.err)
        }
    }

    func testBadArgumentsPrintTheUsage() throws {
        for arguments in [
            [], ["verify"], ["plan", artifact], ["plan", artifact, "--budget", "lots"], ["frobnicate", artifact],
            ["verify", artifact, "--budget", "1"],
        ] {
            let failed = try runList(arguments)
            XCTAssertEqual(failed.status, 2, "\(arguments)")
            XCTAssertTrue(failed.err.hasPrefix("error: "), failed.err)
            XCTAssertTrue(failed.err.contains("usage: edgetrim-kit verify ARTIFACT"), failed.err)
        }
    }
}
