import CoreML
import EdgetrimCore
import PhotosUI
import SwiftUI

/// Photo + prompt -> HiRED visual tokens spliced into the prompt -> prefill -> streamed greedy answer, with
/// TTFT, decode tokens/s and the memory footprint.
struct VLMScreen: View {
    @EnvironmentObject var library: ArtifactLibrary
    @EnvironmentObject var settings: RunSettings
    @State private var selection: ArtifactLibrary.Entry?
    @State private var photo: PhotosPickerItem?
    @State private var prompt = "Describe the image in one sentence."
    @State private var answer = ""
    @State private var status = ""

    var body: some View {
        NavigationStack {
            Form {
                ArtifactPicker(kinds: [Contract.vlm], selection: $selection)
                PhotosPicker("Photo", selection: $photo, matching: .images)
                TextField("Prompt", text: $prompt, axis: .vertical)
                Button("Ask") { Task { await ask() } }.disabled(selection == nil || photo == nil)
                Section("Answer") { Text(answer) }
                Text(status).font(.caption).foregroundStyle(.secondary)
            }
            .navigationTitle("VLM")
        }
    }

    private func ask() async {
        guard let entry = selection, let photo,
              let data = try? await photo.loadTransferable(type: Data.self),
              let image = UIImage(data: data).flatMap(RGBImage.init)
        else { return }
        answer = ""
        do {
            status = "verifying…"
            let artifact = try await library.open(entry, kinds: [Contract.vlm])
            let (budget, units, question) = (settings.budget, settings.units, prompt)
            let stream = AsyncStream<String> { continuation in
                Task.detached(priority: .userInitiated) {
                    do {
                        let summary = try VLMRun(artifact: artifact, budgetMB: budget, units: units)
                            .generate(image: image, prompt: question) { continuation.yield($0) }
                        continuation.yield("\n\u{1}" + summary)
                    } catch {
                        continuation.yield("\n\u{1}error: \(error)")
                    }
                    continuation.finish()
                }
            }
            status = "running…"
            for await piece in stream {
                if let split = piece.firstIndex(of: "\u{1}") {
                    answer += piece[..<split].trimmingCharacters(in: .newlines)
                    status = String(piece[piece.index(after: split)...])
                } else {
                    answer += piece
                }
            }
        } catch {
            status = "error: \(error)"
        }
    }
}

/// The three pipelines of a vlm artifact and its text side.
struct VLMRun {
    let artifact: Artifact
    let budgetMB: Double?
    let units: MLComputeUnitsBox

    init(artifact: Artifact, budgetMB: Double?, units: MLComputeUnits) {
        self.artifact = artifact
        self.budgetMB = budgetMB
        self.units = MLComputeUnitsBox(units)
    }

    /// Streams the answer's text through `onText`; returns the timings line.
    func generate(image: RGBImage, prompt: String, onText: @escaping (String) -> Void) throws -> String {
        let m = artifact.manifest
        let pp = try m.preprocessing.orThrow("preprocessing")
        let llm = try m.llm.orThrow("llm section")
        let tokenizer = try BPETokenizer(contentsOf: try artifact.dataFile(Contract.tokenizer))
        let table = try EmbeddingTable(artifact: artifact)  // [V, D], memory-mapped; int8 rows dequantized
        let template = try PromptTemplate(try llm.template.orThrow("template"))
        let imageToken = try llm.imageTokenID.orThrow("image token")
        let start = Date()
        let vision = try Pipelines.open(artifact, pipeline: Contract.vision, budgetMB: budgetMB, units: units.value)
        let preprocessor = AnyResPreprocessor(imageSize: pp.imageSize, grid: (pp.grid[0], pp.grid[1]), mean: pp.mean, std: pp.std)
        let visual = try vision.run([Contract.pixelValues: preprocessor.pixelValues(image)], function: nil)[Contract.tokens]
            .orThrow("visual tokens")
        let ids = try template.ids(prompt: prompt, imageTokenId: imageToken, tokenizer: tokenizer)
        let embeds = try spliceVisual(ids: ids, visual: visual, imageTokenId: imageToken, embedding: { try table.row($0) })
        // one copy of the weights: both pipelines run the same chunks, prefill_<n> (one per prefill length) and decode;
        // the KV cache crosses calls as past / present tensors (kv_cache io) or stays in the layer chunks as Core ML
        // state (kv_cache state, iOS 18), one MLState per chunk made by each generation's prefill
        let io = LanguageModelIO(llm)
        let prefill = try Pipelines.open(artifact, pipeline: Contract.prefill, budgetMB: budgetMB, units: units.value,
                                         inputs: io.prefillInputs, outputs: io.outputs,
                                         function: Contract.prefillFunction(llm.prefillLength))
        let decode = try Pipelines.open(artifact, pipeline: Contract.decode, budgetMB: budgetMB, units: units.value,
                                        inputs: io.decodeInputs, outputs: io.outputs, function: Contract.decode)
        let int = artifact.target == Contract.coreml ? { (v: Int) in Tensor(shape: [1], values: .int32([Int32(v)])) }
            : { (v: Int) in Tensor(shape: [1], values: .int64([Int64(v)])) }
        let decoder = GreedyDecoder<KVCache>(
            llm: llm, integer: int, embedding: { try table.row($0) },
            prefill: { try prefill.run($0, function: $1, states: $2) },
            decode: { try decode.run($0, function: $1, states: $2) })
        let text = TextStream(tokenizer: tokenizer)
        let visionSeconds = Date().timeIntervalSince(start)
        let generation = try decoder.generate(embeds, maxNewTokens: 64, eosTokens: Set(llm.eosTokenIDs ?? [])) { token in
            if let delta = text.append(token) { onText(delta) }
        }
        return String(format: "K %d, prefill %d, KV %@, TTFT %.0f ms, %.1f tokens/s, footprint %.0f MB%@",
                      visual.shape[1], generation.prefillLength, llm.kvCache, (visionSeconds + generation.ttft) * 1000,
                      generation.decodeTokensPerSecond,
                      footprintMB(), m.source.randomWeights ? " (random weights: text is meaningless)" : "")
    }
}

/// MLComputeUnits across the detached task (an enum of plain values).
struct MLComputeUnitsBox: @unchecked Sendable {
    let value: MLComputeUnits
    init(_ value: MLComputeUnits) { self.value = value }
}
