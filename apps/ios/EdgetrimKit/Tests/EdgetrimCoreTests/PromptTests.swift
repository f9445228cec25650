import EdgetrimCore
import XCTest

/// The prompt vectors of tokenizer/cases.json, the visual splice, the text stream and greedy decoding over fake models.
final class PromptTests: XCTestCase {
    func testPromptVectors() throws {
        let tokenizer = try TokenizerTests.tokenizer()
        let cases = try TokenizerTests.cases("prompts")
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let template = try PromptTemplate(try XCTUnwrap(c["template"] as? String))
            let prompt = try XCTUnwrap(c["prompt"] as? String)
            let image = try XCTUnwrap(c["image_token_id"] as? Int)
            XCTAssertEqual(
                try template.ids(prompt: prompt, imageTokenId: image, tokenizer: tokenizer), c["ids"] as? [Int], prompt)
        }
    }

    func testTemplateRefusals() throws {
        for template in ["USER: {prompt}", "<image> <image> {prompt}", "<image>", "<image> {prompt}{prompt}"] {
            XCTAssertThrowsError(try PromptTemplate(template), template)
        }
        let template = try PromptTemplate("USER: <image>\n{prompt} ASSISTANT:")
        XCTAssertThrowsError(
            try template.ids(prompt: "two <image>", imageTokenId: 3, tokenizer: TokenizerTests.tokenizer()))
        XCTAssertEqual(
            try template.ids(prompt: "{prompt}", imageTokenId: 3, tokenizer: TokenizerTests.tokenizer()).first, 56)
    }

    /// Row i of the fake embedding table is [i, i + 0.5].
    static func embedding(_ id: Int) -> [Float] { [Float(id), Float(id) + 0.5] }

    func testSpliceOnePlaceholder() throws {
        let visual = Tensor(shape: [1, 3, 2], floats: [-1, -1, -2, -2, -3, -3])
        let embeds = try spliceVisual(ids: [7, 3, 8], visual: visual, imageTokenId: 3, embedding: Self.embedding)
        XCTAssertEqual(embeds.shape, [5, 2])
        XCTAssertEqual(embeds.floats, [7, 7.5, -1, -1, -2, -2, -3, -3, 8, 8.5])
    }

    func testSpliceExpandedPlaceholders() throws {
        let visual = Tensor(shape: [2, 2], floats: [-1, -1, -2, -2])
        let embeds = try spliceVisual(ids: [7, 3, 3, 8], visual: visual, imageTokenId: 3, embedding: Self.embedding)
        XCTAssertEqual(embeds.shape, [4, 2])
        XCTAssertEqual(embeds.floats, [7, 7.5, -1, -1, -2, -2, 8, 8.5])
        XCTAssertThrowsError(
            try spliceVisual(ids: [3, 7, 3], visual: visual, imageTokenId: 3, embedding: Self.embedding))
        XCTAssertThrowsError(try spliceVisual(ids: [7, 8], visual: visual, imageTokenId: 3, embedding: Self.embedding))
        XCTAssertThrowsError(try spliceVisual(ids: [7, 3], visual: visual, imageTokenId: 3, embedding: { _ in [0] }))
    }

    /// Python's on_text: a partial UTF-8 character shows as U+FFFD, and the text that completes it is not appended.
    func testTextStream() throws {
        let tokenizer = try TokenizerTests.tokenizer()
        let stream = TextStream(tokenizer: tokenizer)
        let deltas = [75, 131, 106, 79, 600, 2, 224].map { stream.append($0) }
        XCTAssertEqual(deltas, ["h", "\u{FFFD}", nil, "l", "<id:600>", "", " "])
    }

    /// A fake model whose logits pick `script[k]` at step k; records what it was fed.
    final class Fake {
        let script: [Int], vocab: Int
        var embeds: [Tensor] = [], lastIndex: [Int] = [], lengths: [Int] = [], positions: [Int] = [], caches: [Int] = []

        init(_ script: [Int], vocab: Int = 10) { (self.script, self.vocab) = (script, vocab) }

        func logits(_ step: Int) -> Tensor {
            var row = [Float](repeating: 0, count: vocab)
            row[script[step]] = 1
            return Tensor(shape: [1, vocab], floats: row)
        }

        func decoder(prefillLengths: [Int] = [4], maxLength: Int = 6) -> GreedyDecoder<Int> {
            GreedyDecoder(
                prefillLengths: prefillLengths, maxLength: maxLength, embedding: PromptTests.embedding,
                prefill: { embeds, last, length in
                    self.embeds.append(embeds)
                    self.lastIndex.append(last)
                    self.lengths.append(length)
                    return (self.logits(0), 100)
                },
                decode: { row, position, cache in
                    self.embeds.append(row)
                    self.positions.append(position)
                    self.caches.append(cache)
                    return (self.logits(self.positions.count), cache + 1)
                })
        }
    }

    static let prompt = Tensor(shape: [2, 2], floats: [1, 2, 3, 4])

    func testGreedyDecoding() throws {
        let fake = Fake([5, 6, 7, 8])
        var seen: [Int] = []
        let generation = try fake.decoder().generate(Self.prompt, maxNewTokens: 4) { seen.append($0) }
        XCTAssertEqual(generation.tokens, [5, 6, 7, 8])
        XCTAssertEqual(seen, generation.tokens)
        XCTAssertEqual(generation.promptTokens, 2)
        XCTAssertEqual(generation.firstLogits, fake.logits(0).floats)
        XCTAssertEqual(generation.stepTimes.count, 3)
        XCTAssertGreaterThanOrEqual(generation.ttft, 0)
        XCTAssertEqual(fake.embeds[0], Tensor(shape: [1, 4, 2], floats: [1, 2, 3, 4, 0, 0, 0, 0]))
        XCTAssertEqual(fake.lastIndex, [1])
        XCTAssertEqual(fake.lengths, [4])
        XCTAssertEqual(generation.prefillLength, 4)
        XCTAssertEqual(fake.positions, [2, 3, 4])
        XCTAssertEqual(fake.caches, [100, 101, 102])
        XCTAssertEqual(fake.embeds[1...].map(\.floats), [[5, 5.5], [6, 6.5], [7, 7.5]])
        XCTAssertEqual(fake.embeds[1].shape, [1, 1, 2])
    }

    func testStopsAtEos() throws {
        let fake = Fake([5, 2, 7, 8])
        let generation = try fake.decoder().generate(Self.prompt, maxNewTokens: 4, eosTokens: [2, 0])
        XCTAssertEqual(generation.tokens, [5, 2])
        XCTAssertEqual(fake.positions, [2])
        XCTAssertEqual(try Fake([2]).decoder().generate(Self.prompt, maxNewTokens: 4, eosTokens: [2]).tokens, [2])
    }

    func testArgmaxTiesAndNaN() throws {
        let decoder = GreedyDecoder<Int>(
            prefillLengths: [2], maxLength: 3, embedding: Self.embedding,
            prefill: { _, _, _ in (Tensor(shape: [1, 4], floats: [0, 3, 3, 1]), 0) },
            decode: { _, _, _ in (Tensor(shape: [1, 4], floats: [0, 1, .nan, 5]), 0) })
        XCTAssertEqual(try decoder.generate(Self.prompt, maxNewTokens: 2).tokens, [1, 2])
    }

    /// The language-model vector's prefill lengths: a prompt pads to the smallest that holds it (at, below and
    /// above each edge), runs that length's function, and decodes from position n.
    func testPromptsPadToTheSmallestPrefillLengthThatHoldsThem() throws {
        let manifest = try Manifest.parse(try Vectors.data("manifests/language-model.json"))
        let llm = try XCTUnwrap(manifest.llm)
        XCTAssertEqual(llm.prefillLengths, [16, 32, 64])
        let functions = try XCTUnwrap(manifest.chunks.first?.functions?.keys)
        for (n, length) in [(1, 16), (15, 16), (16, 16), (17, 32), (31, 32), (32, 32), (33, 64), (63, 64), (64, 64)] {
            let fake = Fake([5, 6])
            let prompt = Tensor(shape: [n, 2], floats: (0..<2 * n).map(Float.init))
            let decoder = fake.decoder(prefillLengths: Array(llm.prefillLengths.reversed()), maxLength: llm.maxLength)
            let generation = try decoder.generate(prompt, maxNewTokens: 2)
            XCTAssertEqual(fake.lengths, [length], "n \(n)")
            XCTAssertEqual(generation.prefillLength, length, "n \(n)")
            XCTAssertTrue(functions.contains(Contract.prefillFunction(length)))
            let padding = [Float](repeating: 0, count: 2 * (length - n))
            XCTAssertEqual(fake.embeds[0], Tensor(shape: [1, length, 2], floats: prompt.floats + padding), "n \(n)")
            XCTAssertEqual(fake.lastIndex, [n - 1])
            XCTAssertEqual(fake.positions, [n])
        }
        let fake = Fake([1])
        let decoder = fake.decoder(prefillLengths: [64, 16, 32], maxLength: llm.maxLength)
        XCTAssertEqual(decoder.prefillLengths, [16, 32, 64])
        XCTAssertEqual(decoder.prefillLength, 64)
        XCTAssertThrowsError(
            try decoder.generate(Tensor(shape: [65, 2], floats: Array(repeating: 0, count: 130)), maxNewTokens: 1)
        ) {
            XCTAssertTrue("\($0)".contains("longer than the exported prefill length 64"), "\($0)")
        }
        XCTAssertTrue(fake.lengths.isEmpty, "nothing ran")
    }

    func testRefusals() throws {
        let fake = Fake([1, 1, 1, 1, 1])
        let long = Tensor(shape: [5, 2], floats: Array(repeating: 0, count: 10))
        XCTAssertThrowsError(try fake.decoder().generate(long, maxNewTokens: 1)) {
            XCTAssertTrue("\($0)".contains("prefill length 4"))
        }
        XCTAssertThrowsError(try fake.decoder().generate(Self.prompt, maxNewTokens: 0))
        XCTAssertThrowsError(try fake.decoder().generate(Tensor(shape: [0, 2], floats: []), maxNewTokens: 1))
        XCTAssertThrowsError(try fake.decoder().generate(Self.prompt, maxNewTokens: 6)) {
            XCTAssertTrue("\($0)".contains("maxNewTokens 5 or less"))
        }
        XCTAssertEqual(try fake.decoder().generate(Self.prompt, maxNewTokens: 5).tokens.count, 5)
        XCTAssertTrue(fake.embeds.count == 5, "nothing ran before a refusal")
    }
}
