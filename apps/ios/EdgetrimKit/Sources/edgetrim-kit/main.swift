// edgetrim-kit: checks an artifact and plans its memory with EdgetrimCore, as the app will.
//
//   edgetrim-kit verify ARTIFACT                               every file's bytes and sha256, then a summary
//   edgetrim-kit plan ARTIFACT --budget MB [--pipeline NAME]   resident / streamed chunks under a budget
//
// Errors: one line "error: ..." on stderr, exit 2 (bad arguments also print the usage).
import EdgetrimCore
import Foundation

let usage = """
    usage: edgetrim-kit verify ARTIFACT
           edgetrim-kit plan ARTIFACT --budget MB [--pipeline NAME]
    """

/// A problem with the command line: its message, then the usage.
struct UsageError: Error {
    let message: String
}

/// 1.5 KB, 2.0 MB: bytes as the Python CLI prints them.
func humanBytes(_ bytes: Int) -> String {
    var n = Double(bytes)
    for unit in ["B", "KB", "MB"] {
        if n < 1024 { return unit == "B" ? "\(bytes) B" : String(format: "%.1f %@", n, unit) }
        n /= 1024
    }
    return String(format: "%.1f GB", n)
}

/// Rows of cells, each column but the last padded to its widest cell.
func table(_ rows: [[String]], indent: String = "") -> String {
    let widths = (0..<(rows.map(\.count).max() ?? 0)).map { column in
        rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0
    }
    return rows.map { row in
        indent
            + row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column] + 2, withPad: " ", startingAt: 0)
            }.joined()
    }.joined(separator: "\n")
}

func verify(_ path: String) throws -> String {
    let artifact = try Artifact.open(at: URL(fileURLWithPath: path))
    let m = artifact.manifest
    let weights = artifact.randomWeights ? "random weights: outputs are meaningless" : "weights from a checkpoint"
    var lines = [
        "verified \(path): every listed file's bytes and sha256",
        table([
            ["kind", m.kind], ["target", m.target], ["precision", m.precision ?? "unknown"],
            ["source", "\(m.source.name) (\(weights))"],
            ["chunks", "\(m.chunks.count), \(humanBytes(m.chunks.reduce(0) { $0 + $1.bytes }))"],
        ]),
        table(m.chunks.map { [$0.name, humanBytes($0.bytes)] }, indent: "  "),
    ]
    if !m.files.isEmpty {
        lines.append("files")
        lines.append(table(m.files.map { [$0.role, $0.path, humanBytes($0.bytes)] }, indent: "  "))
    }
    lines.append("pipelines")
    lines.append(table(artifact.pipelines.pairs.map { [$0.key, $0.value.joined(separator: " -> ")] }, indent: "  "))
    return lines.joined(separator: "\n")
}

func plan(_ path: String, budgetMB: Double, pipeline: String?) throws -> String {
    let artifact = try Artifact.read(at: URL(fileURLWithPath: path))
    let chunks = try artifact.pipeline(pipeline)
    let plan = try planMemory(chunks: chunks, of: artifact.manifest, budgetMB: budgetMB)
    let name = pipeline ?? (artifact.pipelines.count == 1 ? artifact.pipelines.keys[0] : Contract.defaultPipeline)
    let rows = chunks.enumerated().map { index, chunk in
        [plan.resident.contains(index) ? "resident" : "streamed", chunk.name, humanBytes(artifact.manifest.weightBytes(chunk))]
    }
    return [
        "pipeline \(name) under \(String(format: "%g", budgetMB)) MB (\(plan.budgetBytes ?? 0) bytes): \(plan.summary)",
        table(rows, indent: "  "),
    ].joined(separator: "\n")
}

/// Runs one command line (without the program name): what to print on stdout.
func main(_ arguments: [String]) throws -> String {
    guard let command = arguments.first, arguments.count >= 2 else {
        throw UsageError(message: "pass a command and an artifact folder")
    }
    var positional: [String] = []
    var options: [String: String] = [:]
    var rest = arguments.dropFirst()
    while let argument = rest.popFirst() {
        guard argument.hasPrefix("--") else {
            positional.append(argument)
            continue
        }
        guard command == "plan", ["--budget", "--pipeline"].contains(argument) else {
            throw UsageError(message: "unknown option \(argument)")
        }
        guard let value = rest.popFirst() else { throw UsageError(message: "\(argument) needs a value") }
        options[argument] = value
    }
    guard positional.count == 1 else { throw UsageError(message: "pass one artifact folder") }
    switch command {
    case "verify":
        return try verify(positional[0])
    case "plan":
        guard let text = options["--budget"] else { throw UsageError(message: "plan needs --budget MB") }
        guard let budget = Double(text), budget.isFinite else {
            throw UsageError(message: "--budget takes a number of MB, got \(text)")
        }
        return try plan(positional[0], budgetMB: budget, pipeline: options["--pipeline"])
    default:
        throw UsageError(message: "unknown command \(command)")
    }
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("-h") || arguments.contains("--help") {
    print(usage)
    exit(0)
}
do {
    print(try main(arguments))
} catch {
    let line: String
    switch error {
    case let error as UsageError: line = "\(error.message)\n\(usage)"
    case let refusal as MemoryPlanError: line = refusal.message(budget: "--budget")
    default: line = "\(error)"
    }
    FileHandle.standardError.write(Data("error: \(line)\n".utf8))
    exit(2)
}
