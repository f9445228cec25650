import Foundation

/// A prompt, its splice or its generation cannot be done as asked; the message names the fix.
public struct PromptError: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// A VLM prompt template: `<image>` marks where the K visual tokens go, `{prompt}` the user's text, each exactly once.
public struct PromptTemplate {
    public static let imageToken = Contract.imageToken
    public static let promptField = Contract.promptField

    public let template: String

    public init(_ template: String) throws {
        let bytes = Array(template.utf8)
        guard bytes.ranges(of: Array(Self.imageToken.utf8)).count == 1,
            bytes.ranges(of: Array(Self.promptField.utf8)).count == 1
        else {
            throw PromptError(
                "the prompt template \(template.debugDescription) must contain \(Self.imageToken) and "
                    + "\(Self.promptField) exactly once, e.g. 'USER: <image>\\n{prompt} ASSISTANT:'")
        }
        self.template = template
    }

    /// Token ids of the filled template with one `imageTokenId` at the placeholder. The text before the placeholder
    /// is encoded with the tokenizer's special tokens (e.g. BOS), the text after without, so the placeholder never
    /// merges with its neighbours.
    public func ids(prompt: String, imageTokenId: Int, tokenizer: BPETokenizer) throws -> [Int] {
        let filled = Array(template.utf8).replacing(Array(Self.promptField.utf8), with: Array(prompt.utf8))
        let parts = filled.split(separator: Array(Self.imageToken.utf8), omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw PromptError("the prompt contains \(Self.imageToken): remove it, the template places the image")
        }
        let (before, after) = (String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self))
        return tokenizer.encode(before, addSpecialTokens: true) + [imageTokenId]
            + tokenizer.encode(after, addSpecialTokens: false)
    }
}

extension BPETokenizer {
    /// Text of `ids`; ids the tokenizer lacks (a preset's vocabulary is larger than its tokenizer) show as `<id:N>`.
    public func detokenize(_ ids: [Int]) -> String {
        var text = ""
        var run: [Int] = []
        for id in ids {
            if idToToken(id) == nil {
                text += decode(run) + "<id:\(id)>"
                run = []
            } else {
                run.append(id)
            }
        }
        return text + decode(run)
    }
}

/// Prompt ids -> embeddings [n, D], the one `imageTokenId` replaced by the K rows of `visual` ([K, D] or [1, K, D]).
/// Ids that already hold K consecutive placeholders (a processor that expanded them) are replaced in order.
/// `embedding(id)` is the id's row [D] of the token-embedding table.
public func spliceVisual(
    ids: [Int], visual: Tensor, imageTokenId: Int, embedding: (Int) throws -> [Float]
) throws -> Tensor {
    let width = visual.shape.last ?? 0
    let rows = visual.floats
    let count = width > 0 ? rows.count / width : 0
    let slots = ids.indices.filter { ids[$0] == imageTokenId }
    let replaced = slots.count == count && slots.last.map { $0 - slots[0] + 1 == count } == true
    guard replaced || slots.count == 1 else {
        throw PromptError(
            "the prompt has \(slots.count) image placeholders (id \(imageTokenId)); it needs exactly one "
                + "(or \(count), one per visual token): put the image token once in the prompt template")
    }
    var values: [Float] = []
    for (i, id) in ids.enumerated() {
        if id != imageTokenId {
            values += try embeddingRow(embedding, id, width: width)
        } else if replaced {
            let k = i - slots[0]
            values += rows[k * width..<(k + 1) * width]
        } else {
            values += rows
        }
    }
    return Tensor(shape: [values.count / max(width, 1), width], floats: values)
}

/// `embedding(id)`, checked to be [width].
private func embeddingRow(_ embedding: (Int) throws -> [Float], _ id: Int, width: Int) throws -> [Float] {
    let row = try embedding(id)
    guard row.count == width else {
        throw PromptError(
            "the embedding row of token \(id) has \(row.count) values, not \(width) (the model's width D)")
    }
    return row
}

/// The text of a growing token sequence as deltas, like the Python VlmPipeline's `on_text`: each token re-decodes all
/// new tokens (`detokenize`) and yields what was appended to the text shown so far; nil when the text changed other
/// than by appending (a character completed after a partial UTF-8 sequence showed as U+FFFD).
public final class TextStream {
    private let tokenizer: BPETokenizer
    private var tokens: [Int] = []
    private var shown = ""

    public init(tokenizer: BPETokenizer) { self.tokenizer = tokenizer }

    public func append(_ token: Int) -> String? {
        tokens.append(token)
        let text = tokenizer.detokenize(tokens)
        defer { shown = text }
        guard text.unicodeScalars.starts(with: shown.unicodeScalars) else { return nil }
        return String(text.unicodeScalars.dropFirst(shown.unicodeScalars.count))
    }
}

/// Greedy output: new token ids, the first token's logits [V], timings in seconds.
public struct Generation {
    public var tokens: [Int]
    public var firstLogits: [Float]
    public var promptTokens: Int  // n, visual tokens included
    public var prefillLength: Int  // the exported prefill length that ran (the smallest holding the prompt)
    public var ttft: Double  // padding + prefill + first token
    public var stepTimes: [Double]  // each decode step after the first token

    public var decodeTime: Double { stepTimes.reduce(0, +) }
    public var decodeTokensPerSecond: Double { decodeTime > 0 ? Double(stepTimes.count) / decodeTime : 0 }
}

/// Greedy decoding over a static KV cache, whatever backend runs the model.
///
/// The prompt embeddings [n, D] (n <= P) are right-padded with zeros to the smallest exported prefill length that
/// holds them (P, or a shorter prefill bucket) and prefilled with `lastIndex` n - 1 by that length's function
/// (`Contract.prefillFunction`, over the same weights as `decode`); then each step feeds the embedding row
/// [1, 1, D] of the last token at position n + k - 1 (k tokens so far) with the caches the previous call returned
/// (over chunk pipelines: a `KVCache`, the `present_*` outputs as the next `past_*` inputs or the chunks' model state).
/// Logits are [1, V]; the next token is their argmax (the first maximum; NaN wins, as numpy).
public struct GreedyDecoder<Caches> {
    /// A model call's logits [1, V] and the caches for the next decode step.
    public typealias Output = (logits: Tensor, caches: Caches)
    /// inputs_embeds [1, length, D], the index of the last prompt token, and the prefill length that runs.
    public typealias Prefill = (_ inputsEmbeds: Tensor, _ lastIndex: Int, _ prefillLength: Int) throws -> Output
    public typealias Decode = (_ inputsEmbeds: Tensor, _ position: Int, _ caches: Caches) throws -> Output

    public let prefillLengths: [Int]  // the exported prefill lengths, ascending, the last P (`llm.prefillLengths`)
    public let maxLength: Int  // L, the KV cache length
    public let embedding: (Int) throws -> [Float]  // a token's row [D]
    public let prefill: Prefill
    public let decode: Decode

    public init(
        prefillLengths: [Int], maxLength: Int, embedding: @escaping (Int) throws -> [Float],
        prefill: @escaping Prefill, decode: @escaping Decode
    ) {
        self.prefillLengths = prefillLengths.sorted()
        self.maxLength = maxLength
        self.embedding = embedding
        self.prefill = prefill
        self.decode = decode
    }

    /// P, the longest exported prefill length.
    public var prefillLength: Int { prefillLengths.last ?? 0 }

    /// The smallest exported prefill length that holds `n` prompt tokens (n <= P).
    public func prefillLength(for n: Int) -> Int { prefillLengths.first { $0 >= n } ?? prefillLength }

    /// Greedy tokens after `embeds` [n, D] until `maxNewTokens` or one of `eosTokens` (included); `onToken` sees each.
    public func generate(
        _ embeds: Tensor, maxNewTokens: Int, eosTokens: Set<Int> = [], onToken: ((Int) -> Void)? = nil
    ) throws -> Generation {
        let clock = ContinuousClock()
        let start = clock.now
        let n = embeds.shape.first ?? 0
        let width = embeds.shape.last ?? 0
        guard n <= prefillLength else {
            throw PromptError(
                "the prompt is \(n) tokens (visual tokens included), longer than the exported prefill length "
                    + "\(prefillLength): shorten the prompt or re-export with a longer prefill")
        }
        guard n >= 1, maxNewTokens >= 1 else {
            throw PromptError(
                "nothing to generate from \(n) prompt tokens and \(maxNewTokens) new tokens: pass both >= 1")
        }
        guard n + maxNewTokens - 1 <= maxLength else {
            throw PromptError(
                "\(n) prompt tokens + \(maxNewTokens) new tokens exceed the KV cache of \(maxLength): "
                    + "pass maxNewTokens \(maxLength - n + 1) or less")
        }
        let length = prefillLength(for: n)
        let padded = embeds.floats + [Float](repeating: 0, count: (length - n) * width)
        var (logits, caches) = try prefill(Tensor(shape: [1, length, width], floats: padded), n - 1, length)
        let firstLogits = Self.row(logits)
        var tokens = [Self.argmax(firstLogits)]
        let ttft = (clock.now - start) / .seconds(1)
        onToken?(tokens[0])
        var stepTimes: [Double] = []
        while tokens.count < maxNewTokens, !eosTokens.contains(tokens[tokens.count - 1]) {
            let step = clock.now
            let row = Tensor(
                shape: [1, 1, width], floats: try embeddingRow(embedding, tokens[tokens.count - 1], width: width))
            (logits, caches) = try decode(row, n + tokens.count - 1, caches)
            tokens.append(Self.argmax(Self.row(logits)))
            stepTimes.append((clock.now - step) / .seconds(1))
            onToken?(tokens[tokens.count - 1])
        }
        return Generation(
            tokens: tokens, firstLogits: firstLogits, promptTokens: n, prefillLength: length, ttft: ttft,
            stepTimes: stepTimes)
    }

    /// The first row [V] of logits [1, V].
    private static func row(_ logits: Tensor) -> [Float] { Array(logits.floats.prefix(logits.shape.last ?? 0)) }

    private static func argmax(_ values: [Float]) -> Int {
        var best = 0
        for (i, value) in values.enumerated() {
            if value.isNaN { return i }
            if value > values[best] { best = i }
        }
        return best
    }
}
