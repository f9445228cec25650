import Foundation  // libm (rounding) on Linux

/// An 8-bit RGB image: `pixels` holds `height * width * 3` bytes, row-major, channels interleaved (HxWx3),
/// the layout of `np.asarray(pil_image)` for an RGB image.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public private(set) var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0, "an image has at least one pixel, not \(width)x\(height)")
        precondition(pixels.count == width * height * 3, "\(width)x\(height) RGB needs \(width * height * 3) bytes, not \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A black image (Pillow's `Image.new("RGB", (width, height))`).
    public init(width: Int, height: Int) {
        self.init(width: width, height: height, pixels: [UInt8](repeating: 0, count: width * height * 3))
    }

    /// The `width` x `height` region whose top-left pixel is (`x`, `y`); it must lie inside the image.
    public func cropped(x: Int, y: Int, width: Int, height: Int) -> RGBImage {
        precondition(x >= 0 && y >= 0 && x + width <= self.width && y + height <= self.height, "crop outside the image")
        var out = [UInt8]()
        out.reserveCapacity(width * height * 3)
        for row in y..<(y + height) {
            let start = (row * self.width + x) * 3
            out.append(contentsOf: pixels[start..<(start + width * 3)])
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    /// This image on a black `width` x `height` canvas with its top-left pixel at (`x`, `y`); it must fit.
    public func padded(width: Int, height: Int, x: Int, y: Int) -> RGBImage {
        precondition(x >= 0 && y >= 0 && x + self.width <= width && y + self.height <= height, "paste outside the canvas")
        var canvas = RGBImage(width: width, height: height)
        let rowBytes = self.width * 3
        for row in 0..<self.height {
            let to = ((y + row) * width + x) * 3
            canvas.pixels.replaceSubrange(to..<(to + rowBytes), with: pixels[(row * rowBytes)..<((row + 1) * rowBytes)])
        }
        return canvas
    }

    /// Pillow's `resize((width, height), Image.Resampling.BICUBIC)`, byte for byte: a port of
    /// libImaging/Resample.c (Pillow 13) for 8-bit images. Two passes through an intermediate 8-bit
    /// image, each skipped when its size is unchanged, antialiased when reducing; horizontal first unless
    /// the height loses more than twice as many pixels as the width (Pillow 13's order; Pillow <= 12 always
    /// ran horizontal first, which rounds differently when both sizes change).
    public func resizedBicubic(width: Int, height: Int) -> RGBImage {
        precondition(width > 0 && height > 0, "cannot resize to \(width)x\(height)")
        let verticalFirst = height < self.height && self.height - height > (self.width - width) * 2
        var image = self
        for horizontally in verticalFirst ? [false, true] : [true, false] {
            let size = horizontally ? width : height
            if size != (horizontally ? image.width : image.height) {
                image = image.resampled(horizontally: horizontally, to: size)
            }
        }
        return image
    }

    /// One pass of `ImagingResample{Horizontal,Vertical}_8bpc` along x or y, to `size` pixels.
    private func resampled(horizontally: Bool, to size: Int) -> RGBImage {
        let filter = ResampleFilter(inSize: horizontally ? width : height, outSize: size)
        let outWidth = horizontally ? size : width, outHeight = horizontally ? height : size
        let tapStride = horizontally ? 3 : width * 3  // bytes between two taps of the filter
        var out = [UInt8](repeating: 0, count: outWidth * outHeight * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                var o = 0
                for y in 0..<outHeight {
                    for x in 0..<outWidth {
                        let index = horizontally ? x : y
                        let first = filter.first[index]
                        var tap = horizontally ? (y * width + first) * 3 : (first * width + x) * 3
                        var r = ResampleFilter.half, g = r, b = r  // Pillow's sums fit in 32 bits: Int gives the same
                        for k in filter.weights[(index * filter.ksize)..<(index * filter.ksize + filter.count[index])] {
                            r += Int(src[tap]) * k
                            g += Int(src[tap + 1]) * k
                            b += Int(src[tap + 2]) * k
                            tap += tapStride
                        }
                        dst[o] = ResampleFilter.clip8(r)
                        dst[o + 1] = ResampleFilter.clip8(g)
                        dst[o + 2] = ResampleFilter.clip8(b)
                        o += 3
                    }
                }
            }
        }
        return RGBImage(width: outWidth, height: outHeight, pixels: out)
    }
}

/// Pillow's bicubic weights for one axis (`precompute_coeffs` + `normalize_coeffs_8bpc`, box = the whole
/// axis): output pixel `i` reads input pixels `first[i] ..< first[i] + count[i]` with the fixed-point
/// weights `weights[i * ksize ..< i * ksize + count[i]]` (scaled by 2^precisionBits).
private struct ResampleFilter {
    static let precisionBits = 32 - 8 - 2
    /// The rounding offset every sum starts from.
    static let half = 1 << (precisionBits - 1)

    let ksize: Int
    let first: [Int]
    let count: [Int]
    let weights: [Int]

    init(inSize: Int, outSize: Int) {
        let support = 2.0  // bicubic
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1.0)  // widen the kernel when reducing (antialiasing)
        let inverse = 1.0 / filterScale  // Pillow multiplies by the inverse: dividing could round differently
        let radius = support * filterScale
        let ksize = Int(radius.rounded(.up)) * 2 + 1
        var first = [Int](), count = [Int]()
        var weights = [Int](repeating: 0, count: outSize * ksize)
        var taps = [Double](repeating: 0, count: ksize)
        for i in 0..<outSize {
            let center = (Double(i) + 0.5) * scale
            let lo = max(Int(center - radius + 0.5), 0)  // Int(_:) truncates toward zero, like C's (int)
            let n = min(Int(center + radius + 0.5), inSize) - lo
            var total = 0.0
            for x in 0..<n {
                taps[x] = Self.bicubic((Double(x + lo) - center + 0.5) * inverse)
                total += taps[x]
            }
            for x in 0..<n {
                let w = total != 0 ? taps[x] / total : taps[x]
                let fixed = w * Double(1 << Self.precisionBits)
                weights[i * ksize + x] = Int(w < 0 ? fixed - 0.5 : fixed + 0.5)
            }
            first.append(lo)
            count.append(n)
        }
        (self.ksize, self.first, self.count, self.weights) = (ksize, first, count, weights)
    }

    /// Keys' cubic convolution kernel with a = -0.5, support 2, as Pillow evaluates it.
    static func bicubic(_ t: Double) -> Double {
        let a = -0.5
        let x = abs(t)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    /// A fixed-point sum back to a byte, clamped (Pillow's `clip8`).
    static func clip8(_ sum: Int) -> UInt8 { UInt8(min(max(sum >> precisionBits, 0), 255)) }
}
