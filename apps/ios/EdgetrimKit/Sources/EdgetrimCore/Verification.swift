import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why an artifact is refused, with a message naming the problem and the fix (as the Python runtime says it).
///
/// Checks run in the order manifest -> each listed file (chunk files, then top-level data): exists, inside
/// the folder, size, sha256. `reason` is the name the conformance vectors use (`damaged.json`).
public enum VerificationError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// A listed file is absent.
    case missing(String)
    /// A listed file's bytes differ from the manifest's.
    case size(String)
    /// A listed file's digest differs from the manifest's.
    case sha256(String)
    /// A listed path, or a symlink, resolves outside the artifact folder.
    case outside(String)
    /// The manifest is newer than this runtime.
    case schemaVersion(String)
    /// Not JSON, not a manifest, an unknown kind, a missing key, duplicate chunk names, a pipeline naming an
    /// unknown chunk, a chunk without a program file, a field of the wrong type, an int8 embedding table
    /// without its scales.
    case manifest(String)
    /// A sound artifact of a kind the caller does not take (`Artifact.open(at:kinds:)`); no conformance reason.
    case kind(String)

    public var reason: String {
        switch self {
        case .missing: return "missing"
        case .size: return "size"
        case .sha256: return "sha256"
        case .outside: return "outside"
        case .schemaVersion: return "schema_version"
        case .manifest: return "manifest"
        case .kind: return "kind"
        }
    }

    public var message: String {
        switch self {
        case .missing(let m), .size(let m), .sha256(let m), .outside(let m), .schemaVersion(let m),
            .manifest(let m), .kind(let m):
            return m
        }
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}

private let damaged = "the manifest is damaged, re-export the artifact"

extension Manifest {
    /// Artifact kind -> the top-level keys the runtime reads (Python's `REQUIRED_KEYS`).
    public static let requiredKeys: [String: [String]] = [
        Contract.visionEncoder: ["target", "chunks", "preprocessing", "reduction", "source"],
        Contract.vlm: ["target", "chunks", "pipelines", "preprocessing", "reduction", "source", "llm", "files"],
        Contract.languageModel: ["target", "chunks", "pipelines", "source", "llm", "files"],
        Contract.videoDenoiser: ["target", "chunks", "pipelines", "source", "video"],
        Contract.textEncoder: ["target", "chunks", "source", "text_encoder"],
        Contract.videoDecoder: ["target", "chunks", "pipelines", "source", "decoder"],
    ]

    /// Parses and checks manifest JSON as Python's `read_manifest` does, then decodes it (a field of the
    /// wrong type is refused as `manifest` too). `path` names the file in messages. Throws `VerificationError`.
    public static func parse(_ data: Data, path: String = Contract.manifest) throws -> Manifest {
        let json: ManifestJSON
        do {
            json = try ManifestJSON.parse(data)
        } catch {
            throw VerificationError.manifest("\(path) is not valid JSON (\(error)): re-export the artifact")
        }
        guard case .object = json, let version = json["schema_version"] else {
            throw VerificationError.manifest(
                "\(path) is not an edgetrim manifest (no schema_version): re-export the artifact")
        }
        guard case .int(let number) = version, number >= 1 else {
            throw VerificationError.manifest(
                "\(path) has schema version \(version.repr), not a version number: re-export the artifact")
        }
        guard number <= Contract.schemaVersion else {
            throw VerificationError.schemaVersion(
                "\(path) has schema version \(number), newer than this runtime's \(Contract.schemaVersion): "
                    + "upgrade edgetrim")
        }
        let kind = json["kind"] ?? .string(Contract.visionEncoder)
        guard case .string(let name) = kind, let required = requiredKeys[name] else {
            throw VerificationError.manifest(
                "\(path) describes a \(kind.repr) artifact, which this runtime does not know: upgrade edgetrim")
        }
        if let key = required.first(where: { json[$0] == nil }) {
            throw VerificationError.manifest("\(path) lacks '\(key)': \(damaged)")
        }
        try checkChunks(path, json["chunks"])
        try checkPipelines(path, json)
        try checkFileEntries(path, owner: "the artifact", json["files"] ?? .array([]))
        try checkEmbedding(path, json)
        let decoder = JSONDecoder()
        decoder.userInfo[ManifestJSON.userInfoKey] = json
        do {
            return try decoder.decode(Manifest.self, from: data)
        } catch {
            throw VerificationError.manifest("\(path) \(describe(error)): \(damaged)")
        }
    }

    /// An int8 / int8_block embedding table lists its scales (`embedding_scales`); a table tied to the LM head
    /// (`llm.embedding_tied`, int8_block and only it) names one of the artifact's chunks.
    private static func checkEmbedding(_ path: String, _ manifest: ManifestJSON) throws {
        guard let llm = manifest["llm"], case .object = llm else { return }
        let dtype = llm["embedding_dtype"]
        let block = dtype == .string(Contract.embeddingInt8Block)
        if dtype == .string(Contract.embeddingInt8) || block {
            guard case .array(let files) = manifest["files"] ?? .array([]),
                files.contains(where: { $0["role"] == .string(Contract.embeddingScales) })
            else {
                throw VerificationError.manifest(
                    "\(path): llm.embedding_dtype is \(block ? Contract.embeddingInt8Block : Contract.embeddingInt8) "
                        + "but the artifact lists no \(Contract.embeddingScales) file "
                        + "(the table's \(block ? "block" : "per-row") scales): \(damaged)")
            }
        }
        let tied = llm["embedding_tied"]
        guard block == (tied != nil) else {
            throw VerificationError.manifest(
                "\(path): llm.embedding_dtype is \(dtype?.repr ?? "absent") \(tied == nil ? "without" : "with") "
                    + "llm.embedding_tied: a tied table is int8_block and names its head chunk, and only it: \(damaged)")
        }
        if let tied {
            guard case .array(let chunks) = manifest["chunks"] ?? .array([]),
                chunks.contains(where: { $0["name"] == tied }), case .string = tied
            else {
                throw VerificationError.manifest(
                    "\(path): llm.embedding_tied names no chunk of the artifact (\(tied.repr)): \(damaged)")
            }
        }
    }

    /// The chunk and file entries the runtime indexes into: present, typed, inside the folder, names unique.
    private static func checkChunks(_ path: String, _ chunks: ManifestJSON?) throws {
        guard case .array(let chunks) = chunks, !chunks.isEmpty else {
            throw VerificationError.manifest("\(path) lists no chunks: re-export the artifact")
        }
        var seen: Set<ManifestJSON> = []
        for (i, chunk) in chunks.enumerated() {
            guard case .object = chunk, let name = chunk["name"],
                ["files", "inputs", "outputs"].allSatisfy({ chunk[$0] != nil })
            else {
                throw VerificationError.manifest("\(path): chunk \(i) lacks name, files, inputs or outputs: \(damaged)")
            }
            guard seen.insert(name).inserted else {
                throw VerificationError.manifest("\(path): two chunks are named \(name.repr): \(damaged)")
            }
            guard case .array(let files) = chunk["files"], !files.isEmpty else {
                throw VerificationError.manifest("\(path): chunk \(name.repr) lists no files: \(damaged)")
            }
            try checkFileEntries(path, owner: "chunk \(name.repr)", .array(files))
            guard files.contains(where: { $0["role"] == .string(Contract.program) }) else {
                throw VerificationError.manifest("\(path): chunk \(name.repr) lists no program file: \(damaged)")
            }
            let listed = Set(files.compactMap { $0["path"] })
            guard case .object(let functions) = chunk["functions"] ?? .object([]),
                functions.allSatisfy({ $0.value["file"].map(listed.contains) ?? false })
            else {
                throw VerificationError.manifest(
                    "\(path): chunk \(name.repr) has a function whose file it does not list: \(damaged)")
            }
        }
    }

    /// Every pipeline is a non-empty list of existing chunk names.
    private static func checkPipelines(_ path: String, _ manifest: ManifestJSON) throws {
        guard let pipelines = manifest["pipelines"], pipelines != .null else { return }
        guard case .array(let chunks) = manifest["chunks"] else { return }
        let names = Set(chunks.compactMap { $0["name"] })
        guard case .object(let members) = pipelines, !members.isEmpty else {
            throw VerificationError.manifest("\(path): pipelines must map names to chunk lists: \(damaged)")
        }
        for member in members {
            guard case .array(let list) = member.value, !list.isEmpty, list.allSatisfy(names.contains) else {
                throw VerificationError.manifest(
                    "\(path): pipeline '\(member.key)' names chunks the manifest does not list: \(damaged)")
            }
        }
    }

    /// File entries: typed, and relative paths inside the artifact folder (no `..`, no backslash).
    private static func checkFileEntries(_ path: String, owner: String, _ files: ManifestJSON) throws {
        guard case .array(let entries) = files else {
            throw VerificationError.manifest("\(path): \(owner) has a files entry that is not a list: \(damaged)")
        }
        for entry in entries {
            guard case .string(let file) = entry["path"], case .string = entry["role"], case .int = entry["bytes"],
                case .string = entry["sha256"]
            else {
                throw VerificationError.manifest(
                    "\(path): \(owner) has a file entry without path, role, bytes or sha256: \(damaged)")
            }
            if file.isEmpty || file.hasPrefix("/") || file.split(separator: "/").contains("..") || file.contains("\\") {
                throw VerificationError.outside("\(path): file '\(file)' is outside the artifact folder: \(damaged)")
            }
        }
    }

    /// A decoding error in words: "lacks 'x' in chunks[0]" or "has a wrong value at source.name".
    private static func describe(_ error: Error) -> String {
        func dotted(_ path: [CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(
                in: CharacterSet(charactersIn: "."))
        }
        switch error as? DecodingError {
        case .keyNotFound(let key, let context)?:
            return context.codingPath.isEmpty
                ? "lacks '\(key.stringValue)'" : "lacks '\(key.stringValue)' in \(dotted(context.codingPath))"
        case .typeMismatch(_, let context)?, .valueNotFound(_, let context)?, .dataCorrupted(let context)?:
            return "has a wrong value at \(dotted(context.codingPath))"
        default:
            return "cannot be read (\(error))"
        }
    }
}

extension Artifact {
    /// Reads and checks `root/manifest.json` (Python's `read_manifest`); does not touch the listed files.
    public static func read(at root: URL) throws -> Artifact {
        guard isDirectory(root) else {
            throw VerificationError.manifest(
                "\(root.path) is not a folder: pass the folder edgetrim export wrote (it holds manifest.json)")
        }
        let url = root.appendingPathComponent(Contract.manifest)
        guard FileManager.default.fileExists(atPath: url.path), !isDirectory(url),
            let data = FileManager.default.contents(atPath: url.path)
        else {
            throw VerificationError.manifest(
                "\(root.path) has no \(Contract.manifest): pass a folder written by edgetrim export")
        }
        return Artifact(root: root, manifest: try Manifest.parse(data, path: url.path))
    }

    /// Reads, checks and sha256-verifies an artifact (Python's `open_artifact`); refuses one whose kind is not
    /// in `kinds`.
    public static func open(at root: URL, kinds: [String] = Contract.kinds) throws -> Artifact {
        let artifact = try read(at: root)
        guard kinds.contains(artifact.kind) else {
            throw VerificationError.kind(
                "\(root.path) is a \(artifact.kind) artifact; this takes \(kinds.joined(separator: " or ")) "
                    + "artifacts: pass an artifact of that kind")
        }
        try artifact.verifyFiles()
        return artifact
    }

    /// Refuses the artifact if a listed file (of a chunk, or top-level data) is missing, outside the folder,
    /// resized or altered.
    public func verifyFiles() throws {
        for chunk in chunks {
            for entry in chunk.files { try verify(entry, owner: "chunk '\(chunk.name)'") }
        }
        for entry in manifest.files { try verify(entry, owner: "\(entry.role) data") }
    }

    private func verify(_ entry: Manifest.FileEntry, owner: String) throws {
        let url = root.appendingPathComponent(entry.path)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw VerificationError.missing("\(owner): file \(entry.path) is missing: re-export or re-copy it")
        }
        try checkInside(url, entry: entry, owner: owner)
        let (bytes, sha256): (Int, String)
        do {
            (bytes, sha256) = try Self.digest(of: url)
        } catch {
            throw VerificationError.missing("\(owner): \(entry.path) cannot be read (\(error)): re-copy the artifact")
        }
        guard bytes == entry.bytes else {
            throw VerificationError.size(
                "\(owner): \(entry.path) has \(bytes) bytes, the manifest says \(entry.bytes): "
                    + "the file is truncated or replaced, re-copy the artifact")
        }
        guard sha256 == entry.sha256 else {
            throw VerificationError.sha256(
                "\(owner): \(entry.path) fails its sha256 check: the file is corrupted or altered, re-copy the artifact"
            )
        }
    }

    /// Refuses a listed file, or anything inside a listed folder, that resolves outside the artifact folder.
    private func checkInside(_ url: URL, entry: Manifest.FileEntry, owner: String) throws {
        guard let inside = realPath(root) else {
            throw VerificationError.missing("\(root.path) cannot be resolved: pass an existing artifact folder")
        }
        let prefix = inside.hasSuffix("/") ? inside : inside + "/"
        var targets = [url]
        if isDirectory(url) && !isSymlink(url) {
            targets += try Self.walk(url).map(\.url)
        }
        for target in targets {
            guard let resolved = realPath(target) else {
                throw VerificationError.missing(
                    "\(owner): \(entry.path) holds \(target.path), a link to nothing: re-copy the artifact")
            }
            guard resolved == inside || resolved.hasPrefix(prefix) else {
                throw VerificationError.outside(
                    "\(owner): \(entry.path) resolves outside the artifact folder (\(resolved)): "
                        + "copy the real files into the artifact instead of linking to them")
            }
        }
    }

    /// (bytes, lowercase hex sha256) of a file, or of a folder such as an .mlpackage: sha256 over its files in
    /// order of their relative POSIX path (byte order), each contributing that path (UTF-8) then its own
    /// sha256 (32 bytes); its bytes are the sum of its files'. Symlinked folders inside are not entered.
    public static func digest(of url: URL) throws -> (bytes: Int, sha256: String) {
        guard isDirectory(url) else {
            let (bytes, digest) = try SHA256Hasher.hashFile(at: url)
            return (bytes, SHA256Hasher.hex(digest))
        }
        let files = try walk(url).filter { !$0.isDirectory }.sorted {
            $0.relative.utf8.lexicographicallyPrecedes($1.relative.utf8)
        }
        var hasher = SHA256Hasher()
        var bytes = 0
        for file in files {
            let (size, digest) = try SHA256Hasher.hashFile(at: file.url)
            hasher.update(Array(file.relative.utf8))
            hasher.update(digest)
            bytes += size
        }
        return (bytes, SHA256Hasher.hex(hasher.finalize()))
    }

    /// Everything under a folder, as `os.walk` lists it: a symlink to a folder is listed, not entered.
    private static func walk(_ folder: URL, prefix: String = "") throws
        -> [(relative: String, url: URL, isDirectory: Bool)]
    {
        var found: [(relative: String, url: URL, isDirectory: Bool)] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) {
            let url = folder.appendingPathComponent(name)
            let folderLike = isDirectory(url)
            found.append((prefix + name, url, folderLike))
            if folderLike && !isSymlink(url) {
                found += try walk(url, prefix: prefix + name + "/")
            }
        }
        return found
    }
}

/// Whether `url` is a folder, following symlinks.
private func isDirectory(_ url: URL) -> Bool {
    var directory: ObjCBool = false
    return FileManager.default.fileExists(atPath: url.path, isDirectory: &directory) && directory.boolValue
}

private func isSymlink(_ url: URL) -> Bool {
    let type = (try? FileManager.default.attributesOfItem(atPath: url.path))?[.type] as? FileAttributeType
    return type == .typeSymbolicLink
}

/// The absolute path with every symlink resolved, or nil if it does not resolve to an existing item.
private func realPath(_ url: URL) -> String? {
    guard let resolved = realpath(url.path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}

// MARK: - Ordered JSON

/// A JSON value as Python's `json.loads` sees it: integers apart from floats and booleans, and objects in
/// the file's key order (a repeated key keeps its first place and its last value). The manifest checks run
/// on it, and it tells `OrderedMap` its key order while the typed model decodes.
enum ManifestJSON: Hashable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([ManifestJSON])
    case object([Member])

    struct Member: Hashable, Sendable {
        let key: String
        let value: ManifestJSON
    }

    struct SyntaxError: Error, CustomStringConvertible {
        let description: String
    }

    /// Where a `JSONDecoder` finds the parsed manifest (for key order).
    static let userInfoKey = CodingUserInfoKey(rawValue: "edgetrim.manifest-json")!

    /// A member of an object (nil when absent or not an object).
    subscript(key: String) -> ManifestJSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// The keys, in order, of the object at `path` (a decoder's coding path), or nil.
    func keys(at path: [CodingKey]) -> [String]? {
        var node = self
        for key in path {
            if case .array(let items) = node, let index = key.intValue, items.indices.contains(index) {
                node = items[index]
            } else if let member = node[key.stringValue] {
                node = member
            } else {
                return nil
            }
        }
        guard case .object(let members) = node else { return nil }
        return members.map(\.key)
    }

    /// Python's repr of the value, for messages: 'text', 1, True, None.
    var repr: String {
        switch self {
        case .null: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .string(let s): return "'\(s)'"
        case .array(let items): return "[" + items.map(\.repr).joined(separator: ", ") + "]"
        case .object(let members):
            return "{" + members.map { "'\($0.key)': \($0.value.repr)" }.joined(separator: ", ") + "}"
        }
    }

    /// Parses UTF-8 JSON (plus Python's NaN / Infinity).
    static func parse(_ data: Data) throws -> ManifestJSON {
        let bytes = [UInt8](data)
        guard Array(String(decoding: bytes, as: UTF8.self).utf8) == bytes else {
            throw SyntaxError(description: "not UTF-8")
        }
        var reader = Reader(bytes: bytes)
        let value = try reader.value()
        reader.skipSpace()
        guard reader.at == reader.bytes.count else { throw reader.fail("extra data") }
        return value
    }

    private struct Reader {
        let bytes: [UInt8]
        var at = 0

        var next: Unicode.Scalar? { at < bytes.count ? Unicode.Scalar(bytes[at]) : nil }

        func fail(_ what: String) -> SyntaxError { SyntaxError(description: "\(what) at byte \(at)") }

        mutating func skipSpace() {
            while let c = next, c == " " || c == "\t" || c == "\n" || c == "\r" { at += 1 }
        }

        mutating func value() throws -> ManifestJSON {
            skipSpace()
            switch next {
            case "{": return try object()
            case "[": return try array()
            case "\"": return .string(try string())
            case "t": return try literal("true", .bool(true))
            case "f": return try literal("false", .bool(false))
            case "n": return try literal("null", .null)
            case "N": return try literal("NaN", .double(.nan))
            case "I": return try literal("Infinity", .double(.infinity))
            case "-" where bytes[at...].starts(with: "-Infinity".utf8):
                return try literal("-Infinity", .double(-.infinity))
            case let c? where c == "-" || ("0"..."9").contains(c): return try number()
            default: throw fail("expecting a value")
            }
        }

        mutating func literal(_ word: String, _ value: ManifestJSON) throws -> ManifestJSON {
            guard bytes[at...].starts(with: word.utf8) else { throw fail("expecting a value") }
            at += word.utf8.count
            return value
        }

        mutating func object() throws -> ManifestJSON {
            at += 1
            var members: [Member] = []
            var index: [String: Int] = [:]
            skipSpace()
            if next == "}" {
                at += 1
                return .object([])
            }
            while true {
                skipSpace()
                guard next == "\"" else { throw fail("expecting a property name in double quotes") }
                let key = try string()
                skipSpace()
                guard next == ":" else { throw fail("expecting ':'") }
                at += 1
                let member = Member(key: key, value: try value())
                if let i = index[key] {
                    members[i] = member
                } else {
                    index[key] = members.count
                    members.append(member)
                }
                skipSpace()
                guard let c = next, c == "," || c == "}" else { throw fail("expecting ',' or '}'") }
                at += 1
                if c == "}" { return .object(members) }
            }
        }

        mutating func array() throws -> ManifestJSON {
            at += 1
            var items: [ManifestJSON] = []
            skipSpace()
            if next == "]" {
                at += 1
                return .array([])
            }
            while true {
                items.append(try value())
                skipSpace()
                guard let c = next, c == "," || c == "]" else { throw fail("expecting ',' or ']'") }
                at += 1
                if c == "]" { return .array(items) }
            }
        }

        mutating func string() throws -> String {
            at += 1
            var out: [UInt8] = []
            while let c = next {
                at += 1
                switch c {
                case "\"": return String(decoding: out, as: UTF8.self)
                case "\\": out += try escape()
                case "\u{0}"..."\u{1F}": throw fail("invalid control character")
                default: out.append(bytes[at - 1])
                }
            }
            throw fail("unterminated string")
        }

        /// The UTF-8 of one escape (after the backslash); a lone surrogate becomes U+FFFD.
        mutating func escape() throws -> [UInt8] {
            guard let c = next else { throw fail("unterminated string") }
            at += 1
            let simple: [Unicode.Scalar: Unicode.Scalar] = [
                "\"": "\"", "\\": "\\", "/": "/", "b": "\u{8}", "f": "\u{C}", "n": "\n", "r": "\r", "t": "\t",
            ]
            if let scalar = simple[c] { return Array(String(scalar).utf8) }
            guard c == "u" else { throw fail("invalid \\escape") }
            var code = try hex4()
            if (0xD800..<0xDC00).contains(code), bytes[at...].starts(with: "\\u".utf8) {
                let saved = at
                at += 2
                let low = try hex4()
                if (0xDC00..<0xE000).contains(low) {
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    at = saved
                }
            }
            return Array(String(Unicode.Scalar(code) ?? "\u{FFFD}").utf8)
        }

        /// Four hex digits (no sign, as JSON has it).
        mutating func hex4() throws -> UInt32 {
            guard at + 4 <= bytes.count else { throw fail("invalid \\uXXXX escape") }
            var code: UInt32 = 0
            for byte in bytes[at..<at + 4] {
                guard let digit = Character(Unicode.Scalar(byte)).hexDigitValue else {
                    throw fail("invalid \\uXXXX escape")
                }
                code = code << 4 | UInt32(digit)
            }
            at += 4
            return code
        }

        mutating func number() throws -> ManifestJSON {
            let start = at
            var integral = true
            func digits() throws {
                guard let c = next, ("0"..."9").contains(c) else { throw fail("expecting a digit") }
                while let c = next, ("0"..."9").contains(c) { at += 1 }
            }
            if next == "-" { at += 1 }
            if next == "0" { at += 1 } else { try digits() }
            if next == "." {
                at += 1
                integral = false
                try digits()
            }
            if next == "e" || next == "E" {
                at += 1
                integral = false
                if next == "+" || next == "-" { at += 1 }
                try digits()
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            if integral, let int = Int(text) { return .int(int) }
            guard let double = Double(text) else { throw fail("invalid number") }
            return .double(double)
        }
    }
}
