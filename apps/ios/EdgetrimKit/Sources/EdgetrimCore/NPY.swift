import Foundation

/// A NumPy `.npy` array (version 1-3, little-endian float32 or float16, int8 or uint8; C order), as artifacts store
/// their data files: the token-embedding table [V, D] (int8 with its scales [V] in quantized exports, uint8 `q + 128`
/// with block scales when tied to the LM head) and the null caption [L, C]. Values are widened to float32.
public struct NPYArray: Sendable {
    /// Bytes per value of each dtype read.
    static let widths = ["<f4": 4, "<f2": 2, "|i1": 1, "|u1": 1]

    public let shape: [Int]
    public let dtype: String  // "<f4", "<f2", "|i1" or "|u1"
    private let data: Data
    private let offset: Int

    public init(contentsOf url: URL) throws {
        try self.init(data: Data(contentsOf: url, options: .alwaysMapped))
    }

    public init(data: Data) throws {
        let bytes = [UInt8](data.prefix(12))
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw ArtifactError("not a .npy file")
        }
        let major = bytes[6]
        let headerLength = major == 1 ? Int(bytes[8]) | Int(bytes[9]) << 8
            : Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        let start = major == 1 ? 10 : 12
        guard data.count >= start + headerLength,
              let header = String(data: data.subdata(in: start..<(start + headerLength)), encoding: .utf8)
        else { throw ArtifactError("the .npy header is truncated") }
        func field(_ key: String) -> String? {
            guard let range = header.range(of: "'\(key)':") else { return nil }
            return String(header[range.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = field("descr"), let dtype = descr.split(separator: "'").first.map(String.init),
              let width = Self.widths[dtype]
        else { throw ArtifactError("unsupported .npy dtype in \(header): float32, float16 (little-endian), int8 or uint8 only") }
        guard field("fortran_order")?.hasPrefix("False") == true else { throw ArtifactError(".npy is not C order") }
        guard let shapeText = field("shape"), let open = shapeText.firstIndex(of: "("),
              let close = shapeText.firstIndex(of: ")")
        else { throw ArtifactError(".npy header has no shape") }
        let shape = shapeText[shapeText.index(after: open)..<close].split(separator: ",")
            .compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        self.shape = shape
        self.dtype = dtype
        self.offset = start + headerLength
        self.data = data
        guard data.count - offset >= shape.reduce(1, *) * width else {
            throw ArtifactError(".npy data is truncated")
        }
    }

    /// Row `index` of a 2-D array ([D] of [R, D]) as float32.
    public func row(_ index: Int) throws -> [Float] {
        guard shape.count == 2, (0..<shape[0]).contains(index) else {
            throw ArtifactError("row \(index) is outside an array of shape \(shape)")
        }
        return values(from: index * shape[1], count: shape[1])
    }

    /// Every value as float32, row-major.
    public var floats: [Float] { values(from: 0, count: shape.reduce(1, *)) }

    private func values(from first: Int, count: Int) -> [Float] {
        let width = Self.widths[dtype] ?? 0
        return data.withUnsafeBytes { raw in
            (0..<count).map { i in
                let at = offset + (first + i) * width
                switch width {
                case 4: return Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
                case 2: return Float(float16Bits: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
                default:
                    return dtype == "|u1" ? Float(raw.load(fromByteOffset: at, as: UInt8.self))
                        : Float(raw.load(fromByteOffset: at, as: Int8.self))
                }
            }
        }
    }
}

extension Float {
    /// IEEE 754 half precision -> single (every half value, subnormals and infinities included).
    init(float16Bits bits: UInt16) {
        let sign = UInt32(bits >> 15) << 31
        let exponent = Int(bits >> 10 & 0x1F)
        let fraction = UInt32(bits & 0x3FF)
        if exponent == 0x1F {
            self = Float(bitPattern: sign | 0x7F80_0000 | fraction << 13)
        } else if exponent == 0 {
            let magnitude = Float(fraction) * Float(sign: .plus, exponent: -24, significand: 1)
            self = sign == 0 ? magnitude : -magnitude
        } else {
            self = Float(bitPattern: sign | UInt32(exponent + 112) << 23 | fraction << 13)
        }
    }
}
