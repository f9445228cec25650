import XCTest
import EdgetrimCore

final class PreprocessTests: XCTestCase {
    /// Every case of preprocess.json: the views byte for byte, `pixel_values` within 1e-3.
    func testConformanceVectors() throws {
        let cases = try XCTUnwrap(Vectors.json("preprocess.json") as? [[String: Any]])
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let name = try XCTUnwrap(c["name"] as? String)
            let grid = try XCTUnwrap(c["grid"] as? [Int])
            let image = RGBImage(
                width: try XCTUnwrap(c["width"] as? Int), height: try XCTUnwrap(c["height"] as? Int),
                pixels: try Vectors.bytes(try XCTUnwrap(c["input"] as? String)))
            let pre = AnyResPreprocessor(
                imageSize: try XCTUnwrap(c["image_size"] as? Int), grid: (grid[0], grid[1]),
                mean: try XCTUnwrap(c["mean"] as? [Double]), std: try XCTUnwrap(c["std"] as? [Double]))

            let views = pre.views(image)
            XCTAssertEqual(views.count, pre.partitions, name)
            XCTAssertEqual(views.flatMap(\.pixels), try Vectors.bytes(try XCTUnwrap(c["views"] as? String)), "\(name) views")

            let tensor = pre.pixelValues(image)
            let expected = try Vectors.float32(try XCTUnwrap(c["expected"] as? String))
            XCTAssertEqual(tensor.shape, try XCTUnwrap(c["shape"] as? [Int]), name)
            XCTAssertEqual(tensor.dtype, "float32", name)
            XCTAssertEqual(tensor.count, expected.count, name)
            let maxError = zip(tensor.floats, expected).map { abs($0 - $1) }.max() ?? .infinity
            print("preprocess \(name): max |error| = \(maxError)")
            XCTAssertLessThanOrEqual(maxError, 1e-3, name)
        }
    }

    func testPythonRoundHalvesToEven() {
        XCTAssertEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001].map(pythonRound), [0, 2, 2, 0, -2, 2, 3])
    }

    func testPartitions() {
        let clip = (mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        XCTAssertEqual(AnyResPreprocessor(imageSize: 8, grid: (1, 1), mean: clip.mean, std: clip.std).partitions, 1)
        XCTAssertEqual(AnyResPreprocessor(imageSize: 8, grid: (2, 3), mean: clip.mean, std: clip.std).partitions, 7)
    }

    /// A wide image in a 2x2 grid of 4-pixel cells: fitted to 8x2, centred at y = 3, black above and below.
    func testFitPadsWithBlackAndCentres() {
        let white = RGBImage(width: 8, height: 2, pixels: [UInt8](repeating: 255, count: 8 * 2 * 3))
        let pre = AnyResPreprocessor(imageSize: 4, grid: (2, 2), mean: [0, 0, 0], std: [1, 1, 1])
        let views = pre.views(white)
        XCTAssertEqual(views.count, 5)
        let rows: (RGBImage) -> [UInt8] = { view in (0..<4).map { view.pixels[$0 * 4 * 3] } }
        XCTAssertEqual(rows(views[1]), [0, 0, 0, 255])
        XCTAssertEqual(rows(views[3]), [255, 0, 0, 0])
        let tensor = pre.pixelValues(white)
        XCTAssertEqual(tensor.shape, [1, 5, 3, 4, 4])
        XCTAssertEqual(tensor.floats[0], 1)  // full view: (255/255 - 0) / 1
    }

    // Resampler against Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC), Pillow 13.0.0.

    func testIdentitySizeIsACopy() {
        let image = RGBImage(width: 3, height: 2, pixels: (0..<18).map { UInt8($0 * 13) })
        XCTAssertEqual(image.resizedBicubic(width: 3, height: 2), image)
    }

    func testOnePixelImage() {
        let dot = RGBImage(width: 1, height: 1, pixels: [10, 200, 255])
        XCTAssertEqual(dot.resizedBicubic(width: 3, height: 2).pixels, Array(repeating: [10, 200, 255], count: 6).flatMap { $0 })
        XCTAssertEqual(dot.resizedBicubic(width: 1, height: 1), dot)
    }

    func testUpscaleClipsOvershoot() {
        let row = RGBImage(width: 4, height: 1, pixels: [0, 0, 0, 255, 0, 10, 0, 255, 20, 255, 255, 30])
        XCTAssertEqual(row.resizedBicubic(width: 7, height: 1).pixels,
                       [0, 0, 0, 87, 0, 3, 251, 0, 9, 128, 128, 15, 4, 255, 21, 168, 255, 27, 255, 255, 31])
    }

    func testDownscaleIsAntialiased() {
        let row = RGBImage(width: 6, height: 1, pixels: [0, 10, 255, 50, 20, 0, 100, 30, 255, 150, 40, 0, 200, 50, 255, 250, 60, 0])
        XCTAssertEqual(row.resizedBicubic(width: 2, height: 1).pixels, [57, 21, 141, 193, 49, 114])
        let square = RGBImage(width: 3, height: 3, pixels: [0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255,
                                                            10, 20, 30, 40, 50, 60, 70, 80, 90])
        XCTAssertEqual(square.resizedBicubic(width: 1, height: 1).pixels, [73, 85, 79])
    }

    /// Both sizes change: Pillow 13 runs the vertical pass first when the height loses more than twice as
    /// many pixels as the width, and the order changes the rounding.
    func testBothAxesInPillowsOrder() {
        let image = RGBImage(width: 2, height: 3, pixels: [0, 50, 100, 200, 150, 250, 255, 0, 30, 60, 90, 120, 5, 250, 7, 128, 64, 32])
        XCTAssertEqual(image.resizedBicubic(width: 5, height: 2).pixels,  // vertical first
                       [94, 11, 63, 102, 29, 85, 124, 76, 142, 145, 123, 199, 153, 141, 221,
                        103, 170, 7, 103, 155, 15, 101, 116, 35, 99, 77, 55, 99, 62, 63])
        XCTAssertEqual(pattern(width: 6, height: 9).resizedBicubic(width: 5, height: 3).pixels,  // vertical first
                       [101, 141, 153, 106, 124, 151, 143, 99, 122, 168, 124, 119, 125, 152, 101,
                        119, 147, 131, 141, 97, 119, 137, 132, 93, 134, 145, 112, 104, 137, 143,
                        121, 99, 145, 106, 138, 151, 130, 115, 118, 169, 117, 138, 118, 141, 110])
        XCTAssertEqual(pattern(width: 9, height: 6).resizedBicubic(width: 3, height: 5).pixels,  // horizontal first
                       [127, 89, 118, 136, 152, 113, 102, 129, 166, 161, 148, 85, 98, 144, 156,
                        152, 90, 137, 123, 170, 90, 100, 104, 138, 136, 110, 99, 109, 130, 154,
                        155, 123, 118, 118, 154, 135, 172, 98, 146, 145, 117, 85, 84, 130, 139])
        XCTAssertEqual(pattern(width: 3, height: 2).resizedBicubic(width: 2, height: 5).pixels,  // horizontal first
                       [36, 85, 132, 208, 61, 108, 51, 98, 128, 193, 74, 104, 89, 132, 119,
                        154, 108, 95, 127, 165, 109, 115, 141, 85, 142, 178, 105, 100, 154, 81])
    }

    /// Bytes `(i * 37 + 11) % 256`, the test pattern the Pillow numbers above were computed from.
    private func pattern(width: Int, height: Int) -> RGBImage {
        RGBImage(width: width, height: height, pixels: (0..<(width * height * 3)).map { UInt8(($0 * 37 + 11) % 256) })
    }

    func testCropAndPad() {
        let image = RGBImage(width: 2, height: 2, pixels: (1...12).map(UInt8.init))
        XCTAssertEqual(image.cropped(x: 1, y: 0, width: 1, height: 2).pixels, [4, 5, 6, 10, 11, 12])
        XCTAssertEqual(image.cropped(x: 0, y: 1, width: 2, height: 1).padded(width: 3, height: 2, x: 1, y: 1).pixels,
                       [0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 0, 7, 8, 9, 10, 11, 12])
    }
}
