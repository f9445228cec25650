import XCTest

@testable import EdgetrimCore

/// Contract against apps/conformance/contract.json: every name with the same value, every rule's example.
final class ContractTests: XCTestCase {
    /// Python name -> the Swift constant.
    let constants: [String: Any] = [
        "SCHEMA_VERSION": Contract.schemaVersion, "MANIFEST": Contract.manifest, "REPORT": Contract.report,
        "VISION_ENCODER": Contract.visionEncoder, "VLM": Contract.vlm, "LANGUAGE_MODEL": Contract.languageModel,
        "VIDEO_DENOISER": Contract.videoDenoiser, "TEXT_ENCODER": Contract.textEncoder,
        "VIDEO_DECODER": Contract.videoDecoder, "KINDS": Contract.kinds,
        "ONNX": Contract.onnx, "COREML": Contract.coreml, "EXECUTORCH": Contract.executorch,
        "TARGETS": Contract.targets, "PROGRAM_SUFFIX": Contract.programSuffix, "ORT_EXTENDED": Contract.ortExtended,
        "INT8_DYNAMIC": Contract.int8Dynamic, "INT4_DYNAMIC": Contract.int4Dynamic,
        "INT8_WEIGHT": Contract.int8Weight, "INT4_WEIGHT": Contract.int4Weight, "QUANTIZATIONS": Contract.quantizations, "VISION": Contract.vision, "PREFILL": Contract.prefill,
        "DECODE": Contract.decode, "CAPTION": Contract.caption, "DENOISER": Contract.denoiser, "TEXT": Contract.text,
        "DEFAULT_PIPELINE": Contract.defaultPipeline, "PROGRAM": Contract.program,
        "EXTERNAL_DATA": Contract.externalData, "EMBEDDING": Contract.embedding, "EMBEDDING_SCALES": Contract.embeddingScales,
        "EMBEDDING_FLOAT32": Contract.embeddingFloat32, "EMBEDDING_FLOAT16": Contract.embeddingFloat16,
        "EMBEDDING_INT8": Contract.embeddingInt8, "EMBEDDING_INT8_BLOCK": Contract.embeddingInt8Block,
        "EMBEDDING_ZERO_POINT": Contract.embeddingZeroPoint, "TOKENIZER": Contract.tokenizer,
        "TOKENIZER_CONFIG": Contract.tokenizerConfig, "SPECIAL_TOKENS_MAP": Contract.specialTokensMap,
        "NULL_CAPTION": Contract.nullCaption, "TOKENIZER_FILES": Contract.tokenizerFiles,
        "DATA_FILES": Contract.dataFiles, "PLAIN": Contract.plain, "TDTM": Contract.tdtm,
        "DEFAULT_METHOD": Contract.defaultMethod, "PIXEL_VALUES": Contract.pixelValues, "TOKENS": Contract.tokens,
        "POSITIONS": Contract.positions, "PARTITION_BUDGETS": Contract.partitionBudgets,
        "EARLY_SCORES": Contract.earlyScores, "SELECT_SCORES": Contract.selectScores,
        "INPUTS_EMBEDS": Contract.inputsEmbeds, "LAST_INDEX": Contract.lastIndex, "POSITION": Contract.position,
        "LOGITS": Contract.logits, "KV_STATE": Contract.kvState, "KV_IO": Contract.kvIO, "KV": Contract.kv,
        "LATENT": Contract.latent, "TIMESTEP": Contract.timestep,
        "CAPTION_EMBEDS": Contract.captionEmbeds, "CAPTION_MASK": Contract.captionMask,
        "VELOCITY": Contract.velocity, "CAPTION_TOKENS": Contract.captionTokens, "TIME": Contract.time,
        "TIME_MLP": Contract.timeMLP, "INPUT_IDS": Contract.inputIDs, "ATTENTION_MASK": Contract.attentionMask,
        "ATTENTION_BIAS": Contract.attentionBias, "TEMPORAL": Contract.temporal,
        "SPATIAL": Contract.spatial, "LATENT_CHUNK": Contract.latentChunk,
        "FRAME_LATENTS": Contract.frameLatents, "FRAME_BATCH": Contract.frameBatch, "FRAMES": Contract.frames,
        "IMAGE_TOKEN": Contract.imageToken,
        "PROMPT_FIELD": Contract.promptField,
    ]

    /// Example of each naming rule, as contract.json spells the call.
    let rules: [String: Any] = [
        "hidden_name(3)": Contract.hiddenName(3),
        "past_names(1)": Contract.pastNames(1),
        "present_names(1)": Contract.presentNames(1),
        "cache_names(1)": Contract.cacheNames(1),
        "method_name('tdtm')": Contract.methodName(Contract.tdtm),
        "prefill_function(96)": Contract.prefillFunction(96),
        "temporal_function(2)": Contract.temporalFunction(2),
        "program_role('tdtm', false)": Contract.programRole(Contract.tdtm, first: false),
        "temporal_name(3)": Contract.temporalName(3),
        "spatial_name(3)": Contract.spatialName(3),
    ]

    func testEveryNameHasTheRuntimesValue() throws {
        let contract = try XCTUnwrap(Vectors.json("contract.json") as? [String: Any])
        for (name, value) in contract where name != "rules" {
            guard let mine = constants[name] else {
                XCTFail("contract.json defines \(name), Contract does not")
                continue
            }
            XCTAssertTrue(sameJSON(mine, value), "\(name): \(mine) != \(value)")
        }
        for name in constants.keys where contract[name] == nil {
            XCTFail("Contract defines \(name), contract.json does not")
        }
    }

    func testEveryRuleGivesTheRuntimesExample() throws {
        let contract = try XCTUnwrap(Vectors.json("contract.json") as? [String: Any])
        let examples = try XCTUnwrap(contract["rules"] as? [String: Any])
        XCTAssertEqual(Set(examples.keys), Set(rules.keys))
        for (call, value) in examples {
            XCTAssertTrue(sameJSON(rules[call] ?? NSNull(), value), "\(call): \(rules[call] ?? "none") != \(value)")
        }
    }

    func testNamingRulesPadLikePython() {
        XCTAssertEqual(Contract.hiddenName(0), "hidden_00")
        XCTAssertEqual(Contract.hiddenName(123), "hidden_123")
        XCTAssertEqual(Contract.pastNames(12), ["past_key_12", "past_value_12"])
        XCTAssertEqual(Contract.cacheNames(12), ["key_cache_12", "value_cache_12"])
        XCTAssertEqual(Contract.programRole(Contract.plain, first: true), Contract.program)
    }
}

/// Whether a Swift value (String, Int, [String], [String: String]) equals a JSONSerialization value.
func sameJSON(_ mine: Any, _ theirs: Any) -> Bool {
    switch mine {
    case let text as String: return theirs as? String == text
    case let number as Int: return (theirs as? NSNumber)?.intValue == number && !(theirs is String)
    case let list as [Any]:
        guard let other = theirs as? [Any], other.count == list.count else { return false }
        return zip(list, other).allSatisfy(sameJSON)
    case let map as [String: Any]:
        guard let other = theirs as? [String: Any], Set(other.keys) == Set(map.keys) else { return false }
        return map.allSatisfy { key, value in other[key].map { sameJSON(value, $0) } ?? false }
    default: return false
    }
}
