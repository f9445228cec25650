import CoreML
import EdgetrimCore
import SwiftUI

/// Caption -> T5 text encoder -> STDiT3 denoiser with TDTM for the first steps and a fixed LPL leap -> latent
/// frames (one grey tile per channel and frame; decoding latents to pixels needs the VAE decoder, not yet
/// exported), with the chunk timeline of the last denoising steps.
struct VideoScreen: View {
    @EnvironmentObject var library: ArtifactLibrary
    @EnvironmentObject var settings: RunSettings
    @State private var textEncoder: ArtifactLibrary.Entry?
    @State private var denoiser: ArtifactLibrary.Entry?
    @State private var caption = "a red boat on a calm river at night"
    @State private var steps = 30
    @State private var mergeSteps = 15
    @State private var leapAt = 15
    @State private var frames: [[RGBImage]] = []
    @State private var timeline: [ChunkTimeline.Event] = []
    @State private var status = ""

    var body: some View {
        NavigationStack {
            Form {
                ArtifactPicker(kinds: [Contract.textEncoder], selection: $textEncoder)
                ArtifactPicker(kinds: [Contract.videoDenoiser], selection: $denoiser)
                TextField("Caption", text: $caption, axis: .vertical)
                Stepper("Steps \(steps)", value: $steps, in: 2...50)
                Stepper("TDTM steps \(mergeSteps)", value: $mergeSteps, in: 0...steps)
                Stepper("Leap at \(leapAt)", value: $leapAt, in: 1...(steps - 1))
                Button("Generate") { Task { await generate() } }.disabled(textEncoder == nil || denoiser == nil)
                Text(status).font(.caption)
                ForEach(frames.indices, id: \.self) { c in
                    ScrollView(.horizontal) {
                        HStack { ForEach(frames[c].indices, id: \.self) { t in frames[c][t].uiImage.map { Image(uiImage: $0).resizable().interpolation(.none).frame(width: 64, height: 64) } } }
                    }
                }
                if !timeline.isEmpty { TimelineChart(events: timeline) }
            }
            .navigationTitle("Video")
        }
    }

    private func generate() async {
        guard let textEntry = textEncoder, let videoEntry = denoiser else { return }
        do {
            status = "verifying…"
            let text = try await library.open(textEntry, kinds: [Contract.textEncoder])
            let video = try await library.open(videoEntry, kinds: [Contract.videoDenoiser])
            let (budget, units) = (settings.budget, MLComputeUnitsBox(settings.units))
            let (caption, steps, merge, leap) = (self.caption, self.steps, self.mergeSteps, self.leapAt)
            status = "sampling…"
            let (latent, events, summary) = try await Task.detached(priority: .userInitiated) {
                try VideoRun(text: text, video: video, budgetMB: budget, units: units.value)
                    .sample(caption: caption, steps: steps, mergeSteps: merge, leapAt: leap)
            }.value
            frames = latent
            timeline = events
            status = summary
        } catch {
            status = "error: \(error)"
        }
    }
}

struct VideoRun {
    let text: Artifact
    let video: Artifact
    let budgetMB: Double?
    let units: MLComputeUnits

    /// (grey tiles [channel][frame], the denoiser's timeline, a summary line).
    func sample(caption: String, steps: Int, mergeSteps: Int, leapAt: Int) throws -> ([[RGBImage]], [ChunkTimeline.Event], String) {
        let t5 = try text.manifest.textEncoder.orThrow("text_encoder section")
        let v = try video.manifest.video.orThrow("video section")
        let tokenizer = try BPETokenizer(contentsOf: try text.dataFile(Contract.tokenizer))
        let ids = Array(tokenizer.encode(caption).prefix(t5.maxLength))
        let length = t5.maxLength
        let int: ([Int]) -> Tensor = text.target == Contract.coreml
            ? { Tensor(shape: [1, length], values: .int32($0.map(Int32.init))) }
            : { Tensor(shape: [1, length], values: .int64($0.map(Int64.init))) }
        let mask = (0..<length).map { $0 < ids.count ? Float(1) : 0 }
        let encoder = try Pipelines.open(text, pipeline: Contract.text, budgetMB: budgetMB, units: units)
        let embeds = try encoder.run([Contract.inputIDs: int(ids + [Int](repeating: 0, count: length - ids.count)),
                                      Contract.attentionMask: Tensor(shape: [1, length], floats: mask)], function: nil)
        let (l, c) = (v.captionLength, v.captionChannels)
        guard let caption = embeds[Contract.captionEmbeds], caption.shape.last == c else {
            throw ArtifactError("the text encoder's width does not match the denoiser's caption channels \(c)")
        }
        let rows = Array(caption.floats.prefix(l * c)) + [Float](repeating: 0, count: max(0, l - length) * c)
        let null = try NPYArray(contentsOf: try video.dataFile(Contract.nullCaption)).floats
        let captioner = try Pipelines.open(video, pipeline: Contract.caption, budgetMB: nil, units: units)
        let batch = v.batch
        func project(_ both: [Float]) throws -> [Float] {  // [2, L, C_cap] -> [2, L, C], CFG halves in batches
            var out: [Float] = []
            for half in stride(from: 0, to: 2, by: batch) {
                let slice = Array(both[(half * l * c)..<((half + batch) * l * c)])
                out += try captioner.run([Contract.captionEmbeds: Tensor(shape: [batch, l, c], floats: slice)], function: nil)[Contract.captionTokens].orThrow("caption").floats
            }
            return out
        }
        let projected = try project(rows + null)
        let width = projected.count / (2 * l)
        let captionMask = Array(mask.prefix(l)) + [Float](repeating: 0, count: max(0, l - length))
        let denoiser = try Pipelines.open(video, pipeline: Contract.denoiser, budgetMB: budgetMB, units: units,
                                          inputs: [Contract.latent, Contract.timestep, Contract.captionTokens, Contract.captionMask])
        let latentCount = v.latentShape.dropFirst().reduce(1, *)
        let velocity: ([Float], Double, String) throws -> [Float] = { z, t, function in
            var halves: [[Float]] = []
            for half in stride(from: 0, to: 2, by: batch) {
                let feeds: [String: Tensor] = [
                    Contract.latent: Tensor(shape: [batch] + v.latentShape.dropFirst(), floats: (0..<batch).flatMap { _ in z }),
                    Contract.timestep: Tensor(shape: [batch], floats: [Float](repeating: Float(t), count: batch)),
                    Contract.captionTokens: Tensor(shape: [batch, l, width], floats: Array(projected[(half * l * width)..<((half + batch) * l * width)])),
                    Contract.captionMask: Tensor(shape: [batch, l], floats: (0..<batch).flatMap { _ in captionMask }),
                ]
                let out = try denoiser.run(feeds, function: function)[Contract.velocity].orThrow("velocity").floats
                let perSample = out.count / batch
                for b in 0..<batch { halves.append(Array(out[(b * perSample)..<(b * perSample + latentCount)])) }
            }
            return RectifiedFlow.guided(unconditional: halves[1], conditional: halves[0], guidance: v.scheduler.cfgScale)
        }
        let noise = (0..<latentCount).map { _ in  // standard normal (Box-Muller)
            Float((-2 * log(Double.random(in: Double.ulpOfOne..<1))).squareRoot() * cos(2 * .pi * Double.random(in: 0..<1)))
        }
        let ratio = RectifiedFlow.shiftRatio(pixelHeight: v.pixelSize[0], pixelWidth: v.pixelSize[1], pixelFrames: v.pixelFrames)
        let result = try RectifiedFlow.sample(velocity: velocity, noise: noise, schedule: RectifiedFlow.timesteps(steps, ratio: ratio),
                                              mergeSteps: mergeSteps, leapAt: leapAt)
        let shape = Array(v.latentShape.dropFirst())  // [C, T, H, W]
        let tiles = (0..<shape[0]).map { ch in
            let channel = Array(result.latent[(ch * shape[1] * shape[2] * shape[3])..<((ch + 1) * shape[1] * shape[2] * shape[3])])
            let (lo, hi) = (channel.min() ?? 0, channel.max() ?? 1)
            return (0..<shape[1]).map { t in
                let frame = channel[(t * shape[2] * shape[3])..<((t + 1) * shape[2] * shape[3])]
                let grey = frame.map { UInt8(max(0, min(255, ($0 - lo) / max(hi - lo, 1e-12) * 255))) }
                return RGBImage(width: shape[3], height: shape[2], pixels: grey.flatMap { [$0, $0, $0] })
            }
        }
        let summary = String(format: "%d of %d steps (%d tdtm), leapt at %@, %.1f s", result.stepsRun, steps,
                             result.functions.filter { $0 == Contract.tdtm }.count, result.leapStep.map(String.init) ?? "-",
                             result.stepMs.reduce(0, +) / 1000)
        return (tiles, denoiser.timeline.events, summary)
    }
}
