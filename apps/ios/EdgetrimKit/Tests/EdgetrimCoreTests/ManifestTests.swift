import XCTest

@testable import EdgetrimCore

/// Every manifest in apps/conformance decodes, with its pipelines (in order), functions and sections; the
/// ordered JSON reader under it.
final class ManifestTests: XCTestCase {
    let kinds = ["vlm", "language-model", "video-denoiser", "text-encoder"]

    func manifest(_ kind: String) throws -> (Manifest, [String: Any]) {
        let data = try Vectors.data("manifests/\(kind).json")
        let raw = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (try Manifest.parse(data), raw)
    }

    func testEveryManifestDecodesItsChunksAndFilesAsWritten() throws {
        for kind in kinds {
            let (manifest, raw) = try self.manifest(kind)
            XCTAssertEqual(manifest.kind, kind)
            XCTAssertEqual(manifest.schemaVersion, Contract.schemaVersion)
            XCTAssertEqual(manifest.target, raw["target"] as? String)
            XCTAssertTrue(Contract.targets.contains(manifest.target))
            XCTAssertEqual(manifest.source.randomWeights, true)
            let chunks = try XCTUnwrap(raw["chunks"] as? [[String: Any]])
            XCTAssertEqual(manifest.chunks.map(\.name), chunks.map { $0["name"] as? String ?? "" })
            for (chunk, rawChunk) in zip(manifest.chunks, chunks) {
                let files = try XCTUnwrap(rawChunk["files"] as? [[String: Any]])
                XCTAssertEqual(chunk.files.map(\.path), files.map { $0["path"] as? String ?? "" })
                XCTAssertEqual(chunk.files.map(\.bytes), files.map { $0["bytes"] as? Int ?? -1 })
                XCTAssertEqual(chunk.files.map(\.sha256), files.map { $0["sha256"] as? String ?? "" })
                let inputs = try XCTUnwrap(rawChunk["inputs"] as? [[String: Any]])
                XCTAssertEqual(chunk.inputs.map(\.name), inputs.map { $0["name"] as? String ?? "" })
                XCTAssertEqual(chunk.inputs.map(\.shape), inputs.map { $0["shape"] as? [Int] ?? [] })
                XCTAssertEqual(chunk.outputs.count, (rawChunk["outputs"] as? [Any])?.count)
            }
            let files = raw["files"] as? [[String: Any]] ?? []
            XCTAssertEqual(manifest.files.map(\.role), files.map { $0["role"] as? String ?? "" })
        }
    }

    func testPipelinesInOrder() throws {
        let expected = [
            "vlm": [Contract.vision, Contract.prefill, Contract.decode],
            "language-model": [Contract.prefill, Contract.decode],
            "video-denoiser": [Contract.caption, Contract.denoiser],
            "text-encoder": [Contract.text],
        ]
        for kind in kinds {
            let (manifest, raw) = try self.manifest(kind)
            let artifact = Artifact(root: URL(fileURLWithPath: "/artifact"), manifest: manifest)
            XCTAssertEqual(artifact.pipelines.keys, expected[kind], kind)
            let rawPipelines = try XCTUnwrap(raw["pipelines"] as? [String: [String]])
            for (name, members) in artifact.pipelines.pairs {
                XCTAssertEqual(members, rawPipelines[name])
                XCTAssertEqual(try artifact.pipeline(name).map(\.name), members)
            }
            XCTAssertThrowsError(try artifact.pipeline("nope")) {
                XCTAssertTrue("\($0)".contains("has no pipeline 'nope'"))
            }
        }
    }

    func testDefaultPipelineIsTheOnlyOneOrMain() throws {
        let (text, _) = try manifest("text-encoder")
        let artifact = Artifact(root: URL(fileURLWithPath: "/a"), manifest: text)
        XCTAssertEqual(try artifact.pipeline().map(\.name), ["embed", "block_00", "block_01", "final"])
        var unnamed = text
        unnamed.pipelines = nil
        let main = Artifact(root: URL(fileURLWithPath: "/a"), manifest: unnamed)
        XCTAssertEqual(main.pipelines.keys, [Contract.defaultPipeline])
        XCTAssertEqual(try main.pipeline().map(\.name), text.chunks.map(\.name))
        let (vlm, _) = try manifest("vlm")
        XCTAssertThrowsError(try Artifact(root: URL(fileURLWithPath: "/a"), manifest: vlm).pipeline())
    }

    func testVideoDepthChunksHoldPlainAndTDTM() throws {
        let (video, _) = try manifest("video-denoiser")
        let root = URL(fileURLWithPath: "/artifact")
        let artifact = Artifact(root: root, manifest: video)
        let depth = video.chunks.filter { $0.name.hasPrefix("depth_") }
        XCTAssertEqual(depth.count, video.video?.depth)
        for chunk in depth {
            let functions = try XCTUnwrap(chunk.functions)
            XCTAssertEqual(functions.keys, [Contract.plain, Contract.tdtm])
            let file = try XCTUnwrap(chunk.files.first).path
            for function in functions.keys {
                let program = try artifact.program(chunk, function: function)
                XCTAssertEqual(program.url, root.appendingPathComponent(file))
                XCTAssertEqual(program.method, Contract.methodName(function))
            }
            XCTAssertEqual(try artifact.program(chunk).method, Contract.methodName(Contract.plain))
            XCTAssertThrowsError(try artifact.program(chunk, function: "fast")) {
                XCTAssertTrue("\($0)".contains("has no function 'fast' (it has plain, tdtm)"))
            }
        }
        let caption = try XCTUnwrap(video.chunks.first)
        let program = try artifact.program(caption, function: Contract.tdtm)
        XCTAssertEqual(program.url, root.appendingPathComponent("00-caption.mlpackage"))
        XCTAssertEqual(program.method, Contract.defaultMethod)
        XCTAssertEqual(try artifact.dataFile(Contract.nullCaption), root.appendingPathComponent("null_caption.npy"))
        XCTAssertThrowsError(try artifact.dataFile(Contract.tokenizer))
    }

    /// vlm and language-model: every chunk of the prefill and decode pipelines (the same chunks) holds
    /// `prefill_<n>` for each prefill length, then `decode`, each with its own inputs and outputs as written.
    func testLanguageModelChunksHoldAPrefillFunctionPerLengthAndDecode() throws {
        for kind in ["vlm", "language-model"] {
            let (manifest, raw) = try self.manifest(kind)
            let root = URL(fileURLWithPath: "/artifact")
            let artifact = Artifact(root: root, manifest: manifest)
            let llm = try XCTUnwrap(manifest.llm)
            let rawLLM = try XCTUnwrap(raw["llm"] as? [String: Any])
            XCTAssertEqual(llm.prefillLengths, try XCTUnwrap(rawLLM["prefill_lengths"] as? [Int]), kind)
            XCTAssertEqual(llm.prefillLengths, llm.prefillLengths.sorted(), kind)
            XCTAssertGreaterThan(llm.prefillLengths.count, 1, kind)
            XCTAssertEqual(llm.prefillLengths.last, llm.prefillLength, kind)
            XCTAssertEqual(try artifact.pipeline(Contract.prefill).map(\.name), artifact.pipelines[Contract.decode])
            let functions = llm.prefillLengths.map(Contract.prefillFunction) + [Contract.decode]
            let rawChunks = try XCTUnwrap(raw["chunks"] as? [[String: Any]])
            for chunk in try artifact.pipeline(Contract.prefill) {
                XCTAssertEqual(chunk.functions?.keys, functions, chunk.name)
                let rawFunctions = try XCTUnwrap(
                    rawChunks.first { $0["name"] as? String == chunk.name }?["functions"] as? [String: [String: Any]])
                for function in functions {
                    let (inputs, outputs) = artifact.io(chunk, function: function)
                    let rawEntry = try XCTUnwrap(rawFunctions[function])
                    for (specs, key) in [(inputs, "inputs"), (outputs, "outputs")] {
                        let rawSpecs = try XCTUnwrap(rawEntry[key] as? [[String: Any]])
                        XCTAssertEqual(specs.map(\.name), rawSpecs.map { $0["name"] as? String ?? "" })
                        XCTAssertEqual(specs.map(\.shape), rawSpecs.map { $0["shape"] as? [Int] ?? [] })
                        XCTAssertEqual(specs.map(\.dtype), rawSpecs.map { $0["dtype"] as? String ?? "" })
                    }
                    let program = try artifact.program(chunk, function: function)
                    XCTAssertEqual(program.url, root.appendingPathComponent(try XCTUnwrap(rawEntry["file"] as? String)))
                    if manifest.target == Contract.executorch {
                        XCTAssertEqual(program.method, Contract.methodName(function))
                    }
                }
                let first = artifact.io(chunk, function: functions[0])
                XCTAssertEqual(artifact.io(chunk).inputs, first.inputs, "nil: the chunk's, its first function's")
                XCTAssertEqual(chunk.inputs, first.inputs)
                XCTAssertEqual(chunk.outputs, first.outputs)
                XCTAssertEqual(artifact.io(chunk, function: "prefill_48").inputs, chunk.inputs, "unknown: the chunk's")
            }
            let embedder = try XCTUnwrap(try artifact.pipeline(Contract.prefill).first)
            let width = try XCTUnwrap(llm.hiddenSize)
            for length in llm.prefillLengths {
                let inputs = artifact.io(embedder, function: Contract.prefillFunction(length)).inputs
                XCTAssertEqual(inputs.first { $0.name == Contract.inputsEmbeds }?.shape, [1, length, width])
            }
            let decode = artifact.io(embedder, function: Contract.decode).inputs
            let leading = Array(decode.map(\.name).prefix(3))
            XCTAssertEqual(leading, [Contract.inputsEmbeds, Contract.position, Contract.pastNames(0)[0]])
            XCTAssertEqual(decode.first?.shape, [1, 1, width])
        }
        let vision = try XCTUnwrap(try manifest("vlm").0.chunks.first)
        XCTAssertNil(vision.functions, "the vision encoder has one program")
    }

    /// language-model-coreml, the KV cache as Core ML model state: the layer chunks list key_cache_XX / value_cache_XX
    /// [1, KV, L, hd] float16 of their layers, no function passes past / present tensors, lm_head keeps no state;
    /// `kv_cache` is io in the other language models and when absent.
    func testAStatefulLanguageModelListsItsCachesAsStates() throws {
        let (manifest, raw) = try self.manifest("language-model-coreml")
        let llm = try XCTUnwrap(manifest.llm)
        XCTAssertEqual(
            [manifest.kind, manifest.target, llm.kvCache], [Contract.languageModel, Contract.coreml, Contract.kvState])
        let shape = [1, try XCTUnwrap(llm.numKVHeads), llm.maxLength, try XCTUnwrap(llm.headDim)]
        let caches = (0..<llm.numLayers).flatMap(Contract.cacheNames).map {
            Manifest.TensorSpec(name: $0, shape: shape, dtype: "float16")
        }
        let artifact = Artifact(root: URL(fileURLWithPath: "/artifact"), manifest: manifest)
        let rawChunks = try XCTUnwrap(raw["chunks"] as? [[String: Any]])
        for (chunk, rawChunk) in zip(manifest.chunks, rawChunks) {
            let rawStates = (rawChunk["states"] as? [[String: Any]])?.map { $0["name"] as? String ?? "" }
            XCTAssertEqual(chunk.states?.map(\.name), rawStates, chunk.name)
            for function in try XCTUnwrap(chunk.functions).keys {
                let (inputs, outputs) = artifact.io(chunk, function: function)
                let tensors = (inputs + outputs).map(\.name)
                XCTAssertFalse(tensors.contains { $0.hasPrefix("past_") || $0.hasPrefix("present_") }, "\(tensors)")
            }
        }
        XCTAssertEqual(manifest.chunks.flatMap { $0.states ?? [] }, caches)
        XCTAssertNil(manifest.chunks.last?.states, "lm_head keeps no state")
        let layers = try XCTUnwrap(try artifact.pipeline(Contract.decode).first)
        XCTAssertEqual(
            artifact.io(layers, function: Contract.decode).inputs.map(\.name), [Contract.inputsEmbeds, Contract.position])
        XCTAssertEqual(try self.manifest("language-model").0.llm?.kvCache, Contract.kvIO)
        XCTAssertEqual(try self.manifest("vlm").0.llm?.kvCache, Contract.kvIO)
        var rawLLM = try XCTUnwrap(raw["llm"] as? [String: Any])
        rawLLM["kv_cache"] = nil
        var older = raw
        older["llm"] = rawLLM
        let parsed = try Manifest.parse(try JSONSerialization.data(withJSONObject: older))
        XCTAssertEqual(parsed.llm?.kvCache, Contract.kvIO)
    }

    func testPrefillLengthsDefaultToThePrefillLength() throws {
        var raw = try XCTUnwrap(Vectors.json("manifests/language-model.json") as? [String: Any])
        var llm = try XCTUnwrap(raw["llm"] as? [String: Any])
        llm["prefill_lengths"] = nil
        raw["llm"] = llm
        let manifest = try Manifest.parse(try JSONSerialization.data(withJSONObject: raw))
        XCTAssertEqual(manifest.llm?.prefillLengths, [try XCTUnwrap(manifest.llm?.prefillLength)])
    }

    func testKindSections() throws {
        let (vlm, _) = try manifest("vlm")
        XCTAssertEqual(vlm.llm?.numLayers, 2)
        XCTAssertTrue(vlm.llm?.template?.contains(Contract.imageToken) ?? false)
        XCTAssertTrue(vlm.llm?.template?.contains(Contract.promptField) ?? false)
        XCTAssertNotNil(vlm.llm?.imageTokenID)
        XCTAssertEqual(vlm.preprocessing?.grid, [2, 2])
        XCTAssertEqual(vlm.preprocessing?.mean.count, 3)
        XCTAssertEqual(vlm.reduction?.method, "hired")
        XCTAssertEqual(vlm.outputs?.keys.first, Contract.tokens)
        XCTAssertEqual(vlm.exportOptions?.model, "tiny-vlm")

        let (language, _) = try manifest("language-model")
        XCTAssertNil(language.llm?.template)
        XCTAssertGreaterThan(language.llm?.maxLength ?? 0, language.llm?.prefillLength ?? .max)
        XCTAssertNil(language.reduction)

        let (video, _) = try manifest("video-denoiser")
        let section = try XCTUnwrap(video.video)
        XCTAssertEqual(section.latentShape.count, 5)
        XCTAssertEqual(section.latentShape[0], section.batch)
        XCTAssertEqual(section.variants, [Contract.plain, Contract.tdtm])
        XCTAssertEqual(section.flops?.keys, [Contract.plain, Contract.tdtm])
        XCTAssertEqual(section.nullCaption, Contract.nullCaption)
        XCTAssertGreaterThan(section.scheduler.baseResolution, 0)

        let (text, _) = try manifest("text-encoder")
        XCTAssertEqual(text.textEncoder?.tokenizer, Contract.tokenizer)
        XCTAssertEqual(text.textEncoder?.maxLength, text.chunks.first?.inputs.first?.shape.last)
    }

    func testAPlainJSONDecoderReadsItTooWithKeysSorted() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: Vectors.data("manifests/vlm.json"))
        XCTAssertEqual(manifest.pipelines?.keys, ["decode", "prefill", "vision"])
        let again = try JSONDecoder().decode(Manifest.self, from: JSONEncoder().encode(manifest))
        XCTAssertEqual(again.chunks.map(\.name), manifest.chunks.map(\.name))
        XCTAssertEqual(again.pipelines, manifest.pipelines)
    }

    func testOrderedJSONKeepsOrderAndPythonsTypes() throws {
        let json = try ManifestJSON.parse(
            Data(#"{"b": 1, "a": [true, 1.0, -2, 1e2, null], "b": "x\u00e9\ud83d\ude00\n", "c": {}}"#.utf8))
        guard case .object(let members) = json else { return XCTFail("not an object") }
        XCTAssertEqual(members.map(\.key), ["b", "a", "c"])
        XCTAssertEqual(json["b"], .string("xé😀\n"))
        XCTAssertEqual(json["a"], .array([.bool(true), .double(1), .int(-2), .double(100), .null]))
        for bad in ["{not json", "[1,]", "01", "\"a", "{\"a\" 1}", "1 2", "", "\u{FEFF}{}", #""\u+123""#, "\"\u{1}\""] {
            XCTAssertThrowsError(try ManifestJSON.parse(Data(bad.utf8)), bad)
        }
        XCTAssertThrowsError(try ManifestJSON.parse(Data([0x22, 0xFF, 0x22])))
    }
}
