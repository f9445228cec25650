import EdgetrimCore
import Foundation
import SwiftUI

/// The artifacts in Documents: folders holding a manifest.json (copied there through the Files app, never
/// bundled). Each is verified (sha256 of every file, nothing outside the folder) before it is opened.
@MainActor
final class ArtifactLibrary: ObservableObject {
    struct Entry: Identifiable, Hashable {
        let url: URL
        let kind: String
        let target: String
        let randomWeights: Bool
        var id: URL { url }
        var name: String { url.lastPathComponent }
    }

    @Published private(set) var entries: [Entry] = []
    @Published var problem: String?

    let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]

    func refresh() {
        let folders = (try? FileManager.default.contentsOfDirectory(at: documents, includingPropertiesForKeys: nil)) ?? []
        entries = folders.compactMap { url in
            guard let artifact = try? Artifact.read(at: url) else { return nil }
            return Entry(url: url, kind: artifact.kind, target: artifact.target,
                         randomWeights: artifact.manifest.source.randomWeights)
        }.sorted { $0.name < $1.name }
    }

    func entries(of kinds: [String]) -> [Entry] { entries.filter { kinds.contains($0.kind) } }

    /// Copies an artifact folder picked in the Files app into Documents.
    func importFolder(_ picked: URL) {
        let scoped = picked.startAccessingSecurityScopedResource()
        defer { if scoped { picked.stopAccessingSecurityScopedResource() } }
        let target = documents.appendingPathComponent(picked.lastPathComponent)
        do {
            try? FileManager.default.removeItem(at: target)
            try FileManager.default.copyItem(at: picked, to: target)
            refresh()
        } catch {
            problem = "could not copy \(picked.lastPathComponent): \(error.localizedDescription)"
        }
    }

    /// Verifies (off the main thread: hashing a large artifact takes seconds) and opens an artifact.
    nonisolated func open(_ entry: Entry, kinds: [String]) async throws -> Artifact {
        try await Task.detached(priority: .userInitiated) { try Artifact.open(at: entry.url, kinds: kinds) }.value
    }
}
