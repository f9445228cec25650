import CoreML
import Darwin
import SwiftUI

/// The user's choices for every run: a memory budget for the chunk scheduler and Core ML compute units.
@MainActor
final class RunSettings: ObservableObject {
    @AppStorage("memoryBudgetMB") var memoryBudgetMB: Double = 0  // 0: everything resident
    @AppStorage("computeUnits") var computeUnits: Int = Int(MLComputeUnits.all.rawValue)

    var budget: Double? { memoryBudgetMB > 0 ? memoryBudgetMB : nil }
    var units: MLComputeUnits { MLComputeUnits(rawValue: computeUnits) ?? .all }
}

/// The app's memory footprint as iOS accounts it against the limit (`phys_footprint`), in MB.
func footprintMB() -> Double {
    var info = task_vm_info_data_t()
    var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
    let result = withUnsafeMutablePointer(to: &info) {
        $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
            task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
        }
    }
    return result == KERN_SUCCESS ? Double(info.phys_footprint) / 1_048_576 : 0
}

struct SettingsScreen: View {
    @EnvironmentObject var settings: RunSettings
    @EnvironmentObject var library: ArtifactLibrary
    @State private var importing = false

    var body: some View {
        NavigationStack {
            Form {
                Section("Memory") {
                    Stepper("Budget: \(settings.memoryBudgetMB == 0 ? "all resident" : "\(Int(settings.memoryBudgetMB)) MB")",
                            value: $settings.memoryBudgetMB, in: 0...8192, step: 64)
                    Text(String(format: "Footprint now: %.0f MB", footprintMB())).foregroundStyle(.secondary)
                }
                Section("Core ML compute units") {
                    Picker("Units", selection: $settings.computeUnits) {
                        Text("All").tag(Int(MLComputeUnits.all.rawValue))
                        Text("CPU + Neural Engine").tag(Int(MLComputeUnits.cpuAndNeuralEngine.rawValue))
                        Text("CPU + GPU").tag(Int(MLComputeUnits.cpuAndGPU.rawValue))
                        Text("CPU only").tag(Int(MLComputeUnits.cpuOnly.rawValue))
                    }
                }
                Section("Artifacts in Documents") {
                    ForEach(library.entries) { entry in
                        VStack(alignment: .leading) {
                            Text(entry.name)
                            Text("\(entry.kind), \(entry.target)\(entry.randomWeights ? ", random weights" : "")")
                                .font(.caption).foregroundStyle(.secondary)
                        }
                    }
                    Button("Import a folder…") { importing = true }
                }
            }
            .navigationTitle("Settings")
            .fileImporter(isPresented: $importing, allowedContentTypes: [.folder]) { result in
                if case .success(let url) = result { library.importFolder(url) }
            }
        }
    }
}
