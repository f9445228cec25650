import EdgetrimCore
import PhotosUI
import SwiftUI

/// Pick a photo -> HiRED's K tokens, the budget of every partition, the kept-token overlay, the latency.
struct VisionScreen: View {
    @EnvironmentObject var library: ArtifactLibrary
    @EnvironmentObject var settings: RunSettings
    @State private var selection: ArtifactLibrary.Entry?
    @State private var photo: PhotosPickerItem?
    @State private var result: VisionRun?
    @State private var status = "Pick an artifact and a photo"

    struct VisionRun {
        let views: [RGBImage]
        let cells: [KeptCell]
        let side: Int
        let budgets: [Int]
        let milliseconds: Double
        let timeline: [ChunkTimeline.Event]
    }

    var body: some View {
        NavigationStack {
            Form {
                ArtifactPicker(kinds: [Contract.visionEncoder], selection: $selection)
                PhotosPicker("Photo", selection: $photo, matching: .images)
                Text(status).font(.callout)
                if let result {
                    Section("Kept tokens: \(result.cells.count) (\(result.budgets.map(String.init).joined(separator: " ")))") {
                        ScrollView(.horizontal) {
                            HStack {
                                ForEach(result.views.indices, id: \.self) { p in
                                    KeptOverlay(view: result.views[p], side: result.side,
                                                kept: result.cells.filter { $0.partition == p })
                                }
                            }
                        }
                        Text(String(format: "%.1f ms", result.milliseconds))
                        TimelineChart(events: result.timeline)
                    }
                }
            }
            .navigationTitle("Vision")
            .onChange(of: photo) { _, item in Task { await run(item) } }
        }
    }

    private func run(_ item: PhotosPickerItem?) async {
        guard let entry = selection, let item,
              let data = try? await item.loadTransferable(type: Data.self),
              let image = UIImage(data: data).flatMap(RGBImage.init)
        else { return }
        do {
            status = "verifying \(entry.name)…"
            let artifact = try await library.open(entry, kinds: [Contract.visionEncoder])
            let pp = try artifact.manifest.preprocessing.orThrow("preprocessing")
            let preprocessor = AnyResPreprocessor(
                imageSize: pp.imageSize, grid: (pp.grid[0], pp.grid[1]), mean: pp.mean, std: pp.std)
            status = "running…"
            let (budget, units) = (settings.budget, settings.units)
            result = try await Task.detached(priority: .userInitiated) {
                let pipeline = try Pipelines.open(artifact, pipeline: Contract.vision, budgetMB: budget, units: units)
                let start = Date()
                let out = try pipeline.run([Contract.pixelValues: preprocessor.pixelValues(image)], function: nil)
                let positions = try out[Contract.positions].orThrow(Contract.positions).ints
                return VisionRun(
                    views: preprocessor.views(image), cells: keptCells(positions: positions, side: pp.patchesPerSide),
                    side: pp.patchesPerSide, budgets: try out[Contract.partitionBudgets].orThrow("budgets").ints,
                    milliseconds: Date().timeIntervalSince(start) * 1000, timeline: pipeline.timeline.events)
            }.value
            status = "done"
        } catch {
            status = "error: \(error)"
        }
    }
}

/// One view with the dropped patches dimmed and the kept ones outlined.
struct KeptOverlay: View {
    let view: RGBImage
    let side: Int
    let kept: [KeptCell]

    var body: some View {
        ZStack(alignment: .topLeading) {
            if let image = view.uiImage { Image(uiImage: image).resizable().interpolation(.none) }
            Canvas { context, size in
                let cell = CGSize(width: size.width / CGFloat(side), height: size.height / CGFloat(side))
                let keptSet = Set(kept.map { $0.row * side + $0.col })
                for index in 0..<(side * side) {
                    let rect = CGRect(x: CGFloat(index % side) * cell.width, y: CGFloat(index / side) * cell.height,
                                      width: cell.width, height: cell.height)
                    if keptSet.contains(index) {
                        context.stroke(Path(rect), with: .color(.yellow), lineWidth: 1)
                    } else {
                        context.fill(Path(rect), with: .color(.black.opacity(0.6)))
                    }
                }
            }
        }
        .frame(width: 224, height: 224)
    }
}

/// A picker over the verified-on-open artifacts of some kinds.
struct ArtifactPicker: View {
    @EnvironmentObject var library: ArtifactLibrary
    let kinds: [String]
    @Binding var selection: ArtifactLibrary.Entry?

    var body: some View {
        Picker("Artifact", selection: $selection) {
            Text("none").tag(ArtifactLibrary.Entry?.none)
            ForEach(library.entries(of: kinds)) { entry in
                Text("\(entry.name) (\(entry.target))").tag(Optional(entry))
            }
        }
    }
}

extension Optional {
    func orThrow(_ what: String) throws -> Wrapped {
        guard let value = self else { throw ArtifactError("the artifact has no \(what)") }
        return value
    }
}
