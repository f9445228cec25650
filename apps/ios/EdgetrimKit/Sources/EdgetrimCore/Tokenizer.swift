import Foundation

/// Why a tokenizer.json cannot be read or is not supported.
public struct TokenizerError: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// A byte-level BPE tokenizer read from a Hugging Face `tokenizer.json`, encoding and decoding exactly as the
/// `tokenizers` library does (GPT-2, Qwen2 and Llama 3 style tokenizers).
///
/// Supported (anything else is refused with a `TokenizerError`):
/// - model `BPE` whose vocabulary holds all 256 byte symbols (no dropout, byte fallback, subword prefix or suffix);
/// - added tokens matched exactly (no `lstrip`, `rstrip`, `single_word`), split out of the text first:
///   the non-normalized ones in the raw text, the normalized ones after normalization;
/// - normalizer none, `NFC`, `NFD`, `NFKC` or `NFKD`;
/// - pre-tokenizer `ByteLevel`, or a `Sequence` of `Split` (pattern, `Isolated`) ending with `ByteLevel`;
/// - decoder `ByteLevel`; post-processor none, `ByteLevel`, `TemplateProcessing`, `RobertaProcessing`,
///   `BertProcessing` or a `Sequence` of them (single sequences only).
public final class BPETokenizer {
    /// GPT-2's split pattern, the one `ByteLevel(use_regex: true)` applies.
    private static let gpt2Split = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    /// GPT-2's `bytes_to_unicode`: each byte as a printable symbol; [256].
    private static let byteSymbols: [Unicode.Scalar] = {
        let printable = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        var symbols = [Unicode.Scalar](repeating: " ", count: 256)
        var next = 256
        for byte in 0..<256 {
            if printable.contains(byte) {
                symbols[byte] = Unicode.Scalar(UInt32(byte))!
            } else {
                symbols[byte] = Unicode.Scalar(UInt32(next))!
                next += 1
            }
        }
        return symbols
    }()

    private static let symbolBytes: [Unicode.Scalar: UInt8] = Dictionary(
        uniqueKeysWithValues: byteSymbols.enumerated().map { ($1, UInt8($0)) })

    private struct Pair: Hashable {
        let left: Int, right: Int
    }

    private struct AddedToken {
        let bytes: [UInt8]
        let id: Int
    }

    /// One pre-tokenizer step, mapping each piece to pieces.
    private enum Step {
        case split(NSRegularExpression)  // matches and the text between them, in order
        case prefixSpace  // a space before a piece that does not start with one
    }

    private enum Segment {
        case text(String)
        case token(Int)
    }

    private let vocab: [String: Int]  // the model's
    private let ids: [String: Int]  // the model's and the added tokens
    private let tokens: [Int: String]
    private let specialIds: Set<Int>
    private let byteIds: [Int]  // [256] id of each byte's symbol
    private let merges: [Pair: (rank: Int, id: Int)]
    private let ignoreMerges: Bool
    private let rawTokens: [UInt8: [AddedToken]]  // by first byte, longest first
    private let normalizedTokens: [UInt8: [AddedToken]]
    private let normalize: ((String) -> String)?
    private let steps: [Step]
    private let prefix: [Int], suffix: [Int]  // added around a sequence with special tokens

    public convenience init(contentsOf url: URL) throws {
        try self.init(json: Data(contentsOf: url))
    }

    public init(json data: Data) throws {
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TokenizerError("not a tokenizer.json: the file is not a JSON object")
        }
        guard let model = root["model"] as? [String: Any], model["type"] as? String == "BPE",
            let vocab = model["vocab"] as? [String: Int], let mergeList = model["merges"] as? [Any]
        else {
            throw TokenizerError("not a BPE tokenizer.json: it needs a model of type BPE with vocab and merges")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix", "dropout"] where !Self.isNull(model[key]) {
            throw TokenizerError("the BPE model sets `\(key)`: only plain byte-level BPE is supported")
        }
        if model["byte_fallback"] as? Bool == true {
            throw TokenizerError(
                "the BPE model uses byte fallback (a SentencePiece-style BPE): only byte-level BPE is supported")
        }
        for key in ["truncation", "padding"] where !Self.isNull(root[key]) {
            throw TokenizerError("the tokenizer.json sets `\(key)`: save it without truncation and padding")
        }
        guard (root["decoder"] as? [String: Any])?["type"] as? String == "ByteLevel" else {
            throw TokenizerError("the decoder is not ByteLevel: only byte-level BPE is supported")
        }
        self.vocab = vocab
        ignoreMerges = model["ignore_merges"] as? Bool ?? false
        byteIds = try Self.byteSymbols.map { symbol in
            guard let id = vocab[String(symbol)] else {
                throw TokenizerError("not a byte-level BPE: the vocabulary lacks the byte symbol \(symbol)")
            }
            return id
        }
        merges = try Self.merges(mergeList, vocab: vocab)

        var ids = vocab
        var tokens = Dictionary(vocab.map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        var raw: [AddedToken] = []
        var normalized: [AddedToken] = []
        var special: Set<Int> = []
        for case let entry as [String: Any] in root["added_tokens"] as? [Any] ?? [] {
            guard let id = entry["id"] as? Int, let content = entry["content"] as? String, !content.isEmpty else {
                throw TokenizerError("an added token lacks its id or content")
            }
            if let flag = ["lstrip", "rstrip", "single_word"].first(where: { entry[$0] as? Bool == true }) {
                throw TokenizerError("the added token \(content) sets `\(flag)`: only exact matches are supported")
            }
            (ids[content], tokens[id]) = (id, content)
            if entry["special"] as? Bool == true { special.insert(id) }
            let token = AddedToken(bytes: Array(content.utf8), id: id)
            if entry["normalized"] as? Bool == true { normalized.append(token) } else { raw.append(token) }
        }
        (self.ids, self.tokens) = (ids, tokens)
        specialIds = special
        rawTokens = Self.byFirstByte(raw)
        normalizedTokens = Self.byFirstByte(normalized)
        normalize = try Self.normalizer(root["normalizer"])
        steps = try Self.preTokenizer(root["pre_tokenizer"])
        (prefix, suffix) = try Self.postProcessor(root["post_processor"])
    }

    /// Number of distinct tokens, added tokens included.
    public var vocabSize: Int { ids.count }

    public func tokenToId(_ token: String) -> Int? { ids[token] }

    public func idToToken(_ id: Int) -> String? { tokens[id] }

    /// Token ids of `text`; `addSpecialTokens` applies the post-processor's template (e.g. a BOS token).
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        let segments = split(text, on: rawTokens).flatMap { segment -> [Segment] in
            guard case .text(let raw) = segment else { return [segment] }
            return split(normalize?(raw) ?? raw, on: normalizedTokens)
        }
        let ids = segments.flatMap { segment -> [Int] in
            switch segment {
            case .token(let id): return [id]
            case .text(let piece): return preTokenize(piece).flatMap { bpe(Array($0.utf8)) }
            }
        }
        return addSpecialTokens ? prefix + ids + suffix : ids
    }

    /// Text of `ids`: ids the tokenizer lacks are dropped, special tokens too unless `skipSpecialTokens` is false;
    /// invalid UTF-8 (a character cut between tokens) becomes U+FFFD.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard let token = tokens[id], !(skipSpecialTokens && specialIds.contains(id)) else { continue }
            let mapped = token.unicodeScalars.compactMap { Self.symbolBytes[$0] }
            bytes += mapped.count == token.unicodeScalars.count ? mapped : Array(token.utf8)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Encoding

    /// `text` split around the leftmost-longest exact matches of `added`, no text segment empty.
    private func split(_ text: String, on added: [UInt8: [AddedToken]]) -> [Segment] {
        let bytes = Array(text.utf8)
        var segments: [Segment] = []
        var start = 0
        var i = 0
        while i < bytes.count {
            let match = added[bytes[i]]?.first { bytes[i...].starts(with: $0.bytes) }
            guard let match else {
                i += 1
                continue
            }
            if start < i { segments.append(.text(String(decoding: bytes[start..<i], as: UTF8.self))) }
            segments.append(.token(match.id))
            i += match.bytes.count
            start = i
        }
        if start < bytes.count { segments.append(.text(String(decoding: bytes[start...], as: UTF8.self))) }
        return segments
    }

    private func preTokenize(_ text: String) -> [String] {
        steps.reduce([text]) { pieces, step in
            switch step {
            case .prefixSpace:
                return pieces.map { $0.utf8.first == UInt8(ascii: " ") ? $0 : " " + $0 }
            case .split(let regex):
                return pieces.flatMap { Self.split($0, regex) }
            }
        }
    }

    /// The matches of `regex` in `text` and the text between them, in order, none empty.
    private static func split(_ text: String, _ regex: NSRegularExpression) -> [String] {
        let units = Array(text.utf16)
        var pieces: [String] = []
        var start = 0
        func cut(_ end: Int) {
            if start < end { pieces.append(String(decoding: units[start..<end], as: UTF16.self)) }
            start = end
        }
        for match in regex.matches(in: text, range: NSRange(location: 0, length: units.count)) {
            cut(match.range.location)
            cut(match.range.location + match.range.length)
        }
        cut(units.count)
        return pieces
    }

    /// BPE over one pre-tokenized word's bytes: merge the lowest-ranked adjacent pair (leftmost on ties) until none merges.
    private func bpe(_ word: [UInt8]) -> [Int] {
        if ignoreMerges, let id = vocab[String(String.UnicodeScalarView(word.map { Self.byteSymbols[Int($0)] }))] {
            return [id]
        }
        var symbols = word.map { byteIds[Int($0)] }
        while symbols.count > 1 {
            var best: (rank: Int, index: Int, id: Int)?
            for i in 0..<symbols.count - 1 {
                if let merge = merges[Pair(left: symbols[i], right: symbols[i + 1])], merge.rank < best?.rank ?? .max {
                    best = (merge.rank, i, merge.id)
                }
            }
            guard let best else { break }
            symbols[best.index] = best.id
            symbols.remove(at: best.index + 1)
        }
        return symbols
    }

    // MARK: - Reading tokenizer.json

    private static func isNull(_ value: Any?) -> Bool { value == nil || value is NSNull }

    /// Merges "a b" or ["a", "b"], ranked by position (a repeated pair keeps its last rank, as `tokenizers` does).
    private static func merges(_ list: [Any], vocab: [String: Int]) throws -> [Pair: (rank: Int, id: Int)] {
        let entries = try list.enumerated().map { rank, entry -> (Pair, (rank: Int, id: Int)) in
            let parts =
                (entry as? [String])
                ?? (entry as? String)?.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard let parts, parts.count == 2, let left = vocab[parts[0]], let right = vocab[parts[1]],
                let id = vocab[parts[0] + parts[1]]
            else {
                throw TokenizerError("the merge \(entry) is not a pair of vocabulary tokens merging into one")
            }
            return (Pair(left: left, right: right), (rank, id))
        }
        return Dictionary(entries, uniquingKeysWith: { _, last in last })
    }

    private static func byFirstByte(_ tokens: [AddedToken]) -> [UInt8: [AddedToken]] {
        Dictionary(grouping: tokens, by: { $0.bytes[0] }).mapValues { $0.sorted { $0.bytes.count > $1.bytes.count } }
    }

    private static func normalizer(_ json: Any?) throws -> ((String) -> String)? {
        guard !isNull(json) else { return nil }
        switch (json as? [String: Any])?["type"] as? String {
        case "NFC": return { $0.precomposedStringWithCanonicalMapping }
        case "NFD": return { $0.decomposedStringWithCanonicalMapping }
        case "NFKC": return { $0.precomposedStringWithCompatibilityMapping }
        case "NFKD": return { $0.decomposedStringWithCompatibilityMapping }
        case let type:
            throw TokenizerError("the normalizer \(type ?? "?") is not supported: only none, NFC, NFD, NFKC, NFKD")
        }
    }

    private static func preTokenizer(_ json: Any?) throws -> [Step] {
        let object = json as? [String: Any] ?? [:]
        let parts =
            object["type"] as? String == "Sequence" ? object["pretokenizers"] as? [[String: Any]] ?? [] : [object]
        guard parts.last?["type"] as? String == "ByteLevel" else {
            throw TokenizerError("the pre-tokenizer does not end with ByteLevel: only byte-level BPE is supported")
        }
        return try parts.flatMap { part -> [Step] in
            switch part["type"] as? String {
            case "ByteLevel":
                let prefixSpace: [Step] = part["add_prefix_space"] as? Bool == true ? [.prefixSpace] : []
                return prefixSpace + (part["use_regex"] as? Bool ?? true ? [.split(try regex(gpt2Split))] : [])
            case "Split":
                let pattern = part["pattern"] as? [String: String]
                guard part["behavior"] as? String == "Isolated", part["invert"] as? Bool != true,
                    let source = pattern?["Regex"] ?? pattern?["String"].map(NSRegularExpression.escapedPattern(for:))
                else {
                    throw TokenizerError(
                        "only Split pre-tokenizers with a pattern and behavior Isolated (not inverted) are supported"
                    )
                }
                return [.split(try regex(source))]
            case let type:
                throw TokenizerError("the pre-tokenizer \(type ?? "?") is not supported: only ByteLevel and Split")
            }
        }
    }

    private static func regex(_ pattern: String) throws -> NSRegularExpression {
        do { return try NSRegularExpression(pattern: pattern) } catch {
            throw TokenizerError("the pre-tokenizer pattern \(pattern) is not a valid regular expression")
        }
    }

    /// (ids before, ids after) a single sequence encoded with special tokens.
    private static func postProcessor(_ json: Any?) throws -> ([Int], [Int]) {
        guard !isNull(json) else { return ([], []) }
        let object = json as? [String: Any] ?? [:]
        switch object["type"] as? String {
        case "ByteLevel":
            return ([], [])
        case "Sequence":
            return try (object["processors"] as? [Any] ?? []).reduce(([], [])) { outer, processor in
                let (before, after) = try postProcessor(processor)
                return (before + outer.0, outer.1 + after)
            }
        case "RobertaProcessing", "BertProcessing":
            guard let cls = (object["cls"] as? [Any])?.last as? Int, let sep = (object["sep"] as? [Any])?.last as? Int
            else {
                throw TokenizerError("the post-processor lacks its cls and sep tokens")
            }
            return ([cls], [sep])
        case "TemplateProcessing":
            let single = object["single"] as? [[String: Any]] ?? []
            let specials = object["special_tokens"] as? [String: [String: Any]] ?? [:]
            guard let sequence = single.firstIndex(where: { $0["Sequence"] != nil }),
                single.filter({ $0["Sequence"] != nil }).count == 1
            else {
                throw TokenizerError("the post-processor's single template needs exactly one sequence")
            }
            let ids = try single.map { piece -> [Int] in
                guard let special = piece["SpecialToken"] as? [String: Any] else { return [] }
                guard let name = special["id"] as? String, let ids = specials[name]?["ids"] as? [Int] else {
                    throw TokenizerError("the post-processor's template names an unknown special token")
                }
                return ids
            }
            return (ids[..<sequence].flatMap { $0 }, ids[sequence...].flatMap { $0 })
        case let type:
            throw TokenizerError(
                "the post-processor \(type ?? "?") is not supported: only ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing"
            )
        }
    }
}
