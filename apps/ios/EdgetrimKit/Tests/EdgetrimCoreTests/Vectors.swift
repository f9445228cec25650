import Foundation

/// The conformance vectors (apps/conformance), found from this file's path.
enum Vectors {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // EdgetrimCoreTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // EdgetrimKit
        .deletingLastPathComponent()  // ios
        .deletingLastPathComponent()  // apps
        .appendingPathComponent("conformance")

    static func url(_ path: String) -> URL { root.appendingPathComponent(path) }

    static func data(_ path: String) throws -> Data { try Data(contentsOf: url(path)) }

    /// A JSON vector file as Foundation objects ([String: Any], [Any], String, NSNumber, NSNull).
    static func json(_ path: String) throws -> Any {
        try JSONSerialization.jsonObject(with: data(path), options: [.fragmentsAllowed])
    }

    static func float32(_ path: String) throws -> [Float] {
        let bytes = try data(path)
        return bytes.withUnsafeBytes { raw in
            (0..<(bytes.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    static func bytes(_ path: String) throws -> [UInt8] { [UInt8](try data(path)) }
}
