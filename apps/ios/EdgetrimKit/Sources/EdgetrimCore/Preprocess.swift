import Foundation  // libm (rounding) on Linux

/// AnyRes preprocessing with a static grid, equal to the Python runtime's (edgetrim/runtime/preprocess.py).
///
/// Views: the full image squashed to S x S, then (for a grid of more than one cell) the image fitted into
/// (cols*S) x (rows*S) keeping its aspect ratio, centred on black and cut into rows x cols cells,
/// row-major. Resizing is Pillow's bicubic, byte for byte.
public struct AnyResPreprocessor: Sendable {
    /// S, the side of every view.
    public let imageSize: Int
    public let grid: (rows: Int, cols: Int)
    /// Per-channel (R, G, B) normalization, applied as `(x / 255 - mean) / std` in float32.
    public let mean: [Float]
    public let std: [Float]

    /// From the manifest's `preprocessing` numbers: `image_size`, `grid` ([rows, cols]), `mean`, `std`.
    public init(imageSize: Int, grid: (rows: Int, cols: Int), mean: [Double], std: [Double]) {
        precondition(imageSize > 0 && grid.rows > 0 && grid.cols > 0, "image size and grid must be positive")
        precondition(mean.count == 3 && std.count == 3, "mean and std need one value per RGB channel")
        self.imageSize = imageSize
        self.grid = grid
        self.mean = mean.map(Float.init)
        self.std = std.map(Float.init)
    }

    /// P, the number of views: the full view, plus rows * cols cells unless the grid is 1x1.
    public var partitions: Int { grid.rows * grid.cols > 1 ? 1 + grid.rows * grid.cols : 1 }

    /// The P views fed to the encoder, each S x S: the full view, then the cells row-major.
    public func views(_ image: RGBImage) -> [RGBImage] {
        let s = imageSize
        var out = [image.resizedBicubic(width: s, height: s)]
        guard partitions > 1 else { return out }
        let canvas = fitted(image, width: grid.cols * s, height: grid.rows * s)
        for row in 0..<grid.rows {
            for col in 0..<grid.cols {
                out.append(canvas.cropped(x: col * s, y: row * s, width: s, height: s))
            }
        }
        return out
    }

    /// `pixel_values`: float32 [1, P, 3, S, S], the views normalized per channel, channels first.
    public func pixelValues(_ image: RGBImage) -> Tensor {
        let views = views(image)
        let plane = imageSize * imageSize
        var values = [Float](repeating: 0, count: views.count * 3 * plane)
        for (p, view) in views.enumerated() {
            for c in 0..<3 {
                let base = (p * 3 + c) * plane
                for i in 0..<plane {
                    values[base + i] = (Float(view.pixels[i * 3 + c]) / 255 - mean[c]) / std[c]
                }
            }
        }
        return Tensor(shape: [1, views.count, 3, imageSize, imageSize], floats: values)
    }

    /// The image resized to fit `width` x `height` keeping its aspect ratio, centred on a black canvas
    /// (LLaVA-NeXT's resize-and-pad; sizes rounded with Python's `round`).
    private func fitted(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        let scale = min(Double(width) / Double(image.width), Double(height) / Double(image.height))
        let w = max(1, pythonRound(Double(image.width) * scale))
        let h = max(1, pythonRound(Double(image.height) * scale))
        return image.resizedBicubic(width: w, height: h)
            .padded(width: width, height: height, x: (width - w) / 2, y: (height - h) / 2)
    }
}

/// Python's `round(x)` for a float: to the nearest integer, halves to even (`round(2.5) == 2`).
public func pythonRound(_ x: Double) -> Int { Int(x.rounded(.toNearestOrEven)) }
