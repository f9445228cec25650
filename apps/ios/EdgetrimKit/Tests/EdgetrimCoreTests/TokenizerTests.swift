import EdgetrimCore
import Foundation
import XCTest

/// tokenizer/cases.json against tokenizer/tokenizer.json, plus the tokenizer.json variants the reader supports or refuses.
final class TokenizerTests: XCTestCase {
    static func cases(_ key: String) throws -> [[String: Any]] {
        try XCTUnwrap((Vectors.json("tokenizer/cases.json") as? [String: Any])?[key] as? [[String: Any]])
    }

    static func tokenizer() throws -> BPETokenizer {
        try BPETokenizer(contentsOf: Vectors.url("tokenizer/tokenizer.json"))
    }

    /// The conformance tokenizer.json as a mutable object, for variants.
    static func json() throws -> [String: Any] {
        try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Vectors.data("tokenizer/tokenizer.json")) as? [String: Any])
    }

    static func tokenizer(_ json: [String: Any]) throws -> BPETokenizer {
        try BPETokenizer(json: JSONSerialization.data(withJSONObject: json))
    }

    func testEncodeVectors() throws {
        let tokenizer = try Self.tokenizer()
        let cases = try Self.cases("encode")
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let text = try XCTUnwrap(c["text"] as? String)
            XCTAssertEqual(tokenizer.encode(text, addSpecialTokens: true), c["ids"] as? [Int], text.debugDescription)
        }
    }

    func testDecodeVectors() throws {
        let tokenizer = try Self.tokenizer()
        let cases = try Self.cases("decode")
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let ids = try XCTUnwrap(c["ids"] as? [Int])
            let text = try XCTUnwrap(c["text"] as? String)
            XCTAssertEqual(
                tokenizer.detokenize(ids).unicodeScalars.map(\.value), text.unicodeScalars.map(\.value), "\(ids)")
            if c["unknown_ids_as"] == nil {
                XCTAssertEqual(
                    tokenizer.decode(ids).unicodeScalars.map(\.value), text.unicodeScalars.map(\.value), "\(ids)")
            }
        }
    }

    func testVocabulary() throws {
        let tokenizer = try Self.tokenizer()
        XCTAssertEqual(tokenizer.vocabSize, 429)
        XCTAssertEqual(tokenizer.tokenToId("<image>"), 3)
        XCTAssertEqual(tokenizer.tokenToId("Ġimage"), 410)
        XCTAssertEqual(tokenizer.idToToken(2), "<|im_end|>")
        XCTAssertNil(tokenizer.idToToken(600))
        XCTAssertNil(tokenizer.tokenToId("nope"))
    }

    /// Ids from Python's `tokenizers` for whitespace classes (\v, NBSP, ideographic space are \s; U+001C is not),
    /// combining marks, case-sensitive contractions, trailing whitespace and overlapping added tokens.
    func testSplitEdgeCases() throws {
        let tokenizer = try Self.tokenizer()
        let expected: [(String, [Int])] = [
            (
                "a\u{0B}\u{0B}b \u{A0}c\u{3000} d\u{1C}\u{1D}e",
                [68, 203, 203, 69, 224, 130, 258, 70, 163, 226, 226, 224, 71, 220, 221, 72]
            ),
            ("e\u{301}x I'S 'sa 're", [72, 140, 227, 91, 224, 44, 10, 54, 224, 10, 86, 68, 224, 10, 265]),
            ("a  \n b   ", [68, 224, 224, 202, 272, 224, 224, 224]),
            ("<|im_start|><|im_start|><image<image>>", [1, 1, 31, 322, 318, 3, 33]),
        ]
        for (text, ids) in expected { XCTAssertEqual(tokenizer.encode(text), ids, text.debugDescription) }
    }

    func testDecodeSpecialAndPartialCharacters() throws {
        let tokenizer = try Self.tokenizer()
        XCTAssertEqual(tokenizer.decode([75, 131]), "h\u{FFFD}")
        XCTAssertEqual(tokenizer.decode([1, 353, 2]), "user")
        XCTAssertEqual(tokenizer.decode([1, 353, 2], skipSpecialTokens: false), "<|im_start|>user<|im_end|>")
    }

    /// Qwen2 / Llama 3 style: a Split pre-tokenizer then ByteLevel without its regex gives the same ids.
    func testSplitThenByteLevel() throws {
        var json = try Self.json()
        json["pre_tokenizer"] = [
            "type": "Sequence",
            "pretokenizers": [
                [
                    "type": "Split", "behavior": "Isolated", "invert": false,
                    "pattern": [
                        "Regex": #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
                    ],
                ],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false],
            ],
        ]
        json["normalizer"] = ["type": "NFC"]
        let tokenizer = try Self.tokenizer(json)
        for c in try Self.cases("encode") {
            XCTAssertEqual(tokenizer.encode(try XCTUnwrap(c["text"] as? String)), c["ids"] as? [Int])
        }
        XCTAssertEqual(tokenizer.encode("e\u{301}"), tokenizer.encode("é"))  // NFC composes
    }

    func testTemplatePostProcessor() throws {
        var json = try Self.json()
        json["post_processor"] = [
            "type": "Sequence",
            "processors": [
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false],
                [
                    "type": "TemplateProcessing",
                    "single": [
                        ["SpecialToken": ["id": "<|im_start|>", "type_id": 0]],
                        ["Sequence": ["id": "A", "type_id": 0]],
                        ["SpecialToken": ["id": "<|endoftext|>", "type_id": 0]],
                    ],
                    "pair": [] as [Any],
                    "special_tokens": [
                        "<|im_start|>": ["id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]],
                        "<|endoftext|>": ["id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]],
                    ],
                ],
            ],
        ]
        let tokenizer = try Self.tokenizer(json)
        XCTAssertEqual(tokenizer.encode("Describe", addSpecialTokens: true), [1, 428, 0])
        XCTAssertEqual(tokenizer.encode("Describe", addSpecialTokens: false), [428])
    }

    func testPrefixSpace() throws {
        var json = try Self.json()
        json["pre_tokenizer"] = [
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true,
        ]
        let tokenizer = try Self.tokenizer(json)
        let plain = try Self.tokenizer()
        XCTAssertEqual(tokenizer.encode("image<image>image"), plain.encode(" image<image> image"))
        XCTAssertEqual(tokenizer.encode(""), [])
    }

    func testIgnoreMerges() throws {
        var json = try Self.json()
        var model = try XCTUnwrap(json["model"] as? [String: Any])
        var vocab = try XCTUnwrap(model["vocab"] as? [String: Int])
        vocab["xyz"] = 429
        (model["vocab"], model["ignore_merges"]) = (vocab, true)
        json["model"] = model
        XCTAssertEqual(try Self.tokenizer(json).encode("xyz the"), [429, 264])
    }

    func testRefusals() throws {
        func refused(_ change: (inout [String: Any]) -> Void, _ words: String, line: UInt = #line) throws {
            var json = try Self.json()
            change(&json)
            XCTAssertThrowsError(try Self.tokenizer(json), line: line) { error in
                XCTAssertTrue("\(error)".contains(words), "\(error)", line: line)
            }
        }
        XCTAssertThrowsError(try BPETokenizer(json: Data("{not json".utf8)))
        try refused({ $0["model"] = ["type": "WordPiece", "vocab": ["a": 0]] }, "BPE")
        try refused({ $0["decoder"] = ["type": "Metaspace"] }, "decoder")
        try refused({ $0["pre_tokenizer"] = ["type": "Whitespace"] }, "ByteLevel")
        try refused({ $0["pre_tokenizer"] = NSNull() }, "ByteLevel")
        try refused({ $0["normalizer"] = ["type": "Lowercase"] }, "Lowercase")
        try refused({ $0["post_processor"] = ["type": "Unknown"] }, "Unknown")
        try refused({ $0["truncation"] = ["max_length": 8] }, "truncation")
        try refused(
            { json in
                var model = json["model"] as! [String: Any]
                model["byte_fallback"] = true
                json["model"] = model
            }, "byte fallback")
        try refused(
            { json in
                var model = json["model"] as! [String: Any]
                var vocab = model["vocab"] as! [String: Int]
                vocab["Ā"] = nil  // the symbol of byte 0
                model["vocab"] = vocab
                json["model"] = model
            }, "byte symbol")
        try refused(
            { json in
                var added = json["added_tokens"] as! [[String: Any]]
                added[0]["lstrip"] = true
                json["added_tokens"] = added
            }, "lstrip")
    }
}
