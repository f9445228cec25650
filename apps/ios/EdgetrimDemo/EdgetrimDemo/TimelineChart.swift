import EdgetrimCore
import SwiftUI

/// Load and compute lanes of the chunk scheduler's latest events: loads hidden behind compute show as overlap.
struct TimelineChart: View {
    let events: [ChunkTimeline.Event]

    var body: some View {
        Canvas { context, size in
            guard let first = events.map(\.start).min(), let last = events.map(\.end).max(), last > first else { return }
            let names = Array(Set(events.map(\.chunk))).sorted()
            let scale = size.width / CGFloat(last - first)
            for event in events {
                let lane: CGFloat = event.kind == .load ? 0 : size.height / 2
                let rect = CGRect(x: CGFloat(event.start - first) * scale, y: lane + 2,
                                  width: max(1, CGFloat(event.end - event.start) * scale), height: size.height / 2 - 4)
                let hue = Double(names.firstIndex(of: event.chunk) ?? 0) / Double(max(1, names.count))
                context.fill(Path(rect), with: .color(Color(hue: hue, saturation: 0.7, brightness: 0.9)))
            }
        }
        .frame(height: 48)
        .overlay(alignment: .leading) { VStack { Text("load"); Text("compute") }.font(.caption2) }
    }
}
