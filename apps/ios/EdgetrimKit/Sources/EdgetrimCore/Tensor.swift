/// A dense tensor as the core passes it between chunks: a shape and row-major values of one dtype.
/// Backends (Core ML, ExecuTorch) convert to and from their own arrays at the edges.
public struct Tensor: Equatable, Sendable {
    public enum Values: Equatable, Sendable {
        case float32([Float])
        case int32([Int32])
        case int64([Int64])
    }

    public var shape: [Int]
    public var values: Values

    public init(shape: [Int], values: Values) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.shape = shape
        self.values = values
    }

    public init(shape: [Int], floats: [Float]) { self.init(shape: shape, values: .float32(floats)) }

    /// The contract's dtype name: float32, int32 or int64.
    public var dtype: String {
        switch values {
        case .float32: return "float32"
        case .int32: return "int32"
        case .int64: return "int64"
        }
    }

    public var count: Int { shape.reduce(1, *) }

    public var floats: [Float] {
        switch values {
        case .float32(let v): return v
        case .int32(let v): return v.map(Float.init)
        case .int64(let v): return v.map(Float.init)
        }
    }

    public var ints: [Int] {
        switch values {
        case .float32(let v): return v.map { Int($0) }
        case .int32(let v): return v.map(Int.init)
        case .int64(let v): return v.map(Int.init)
        }
    }
}

extension Tensor.Values {
    var count: Int {
        switch self {
        case .float32(let v): return v.count
        case .int32(let v): return v.count
        case .int64(let v): return v.count
        }
    }
}
