import EdgetrimCore
import SwiftUI

/// Three screens over artifacts the user copied into Documents (Files app): Vision, VLM, Video; and settings.
@main
struct EdgetrimDemoApp: App {
    @StateObject private var library = ArtifactLibrary()
    @StateObject private var settings = RunSettings()

    var body: some Scene {
        WindowGroup {
            TabView {
                VisionScreen().tabItem { Label("Vision", systemImage: "eye") }
                VLMScreen().tabItem { Label("VLM", systemImage: "text.bubble") }
                VideoScreen().tabItem { Label("Video", systemImage: "film") }
                SettingsScreen().tabItem { Label("Settings", systemImage: "gearshape") }
            }
            .environmentObject(library)
            .environmentObject(settings)
            .task { library.refresh() }
        }
    }
}
