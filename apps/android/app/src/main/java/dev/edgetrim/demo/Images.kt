package dev.edgetrim.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.net.Uri
import dev.edgetrim.core.Resample.RgbImage
import java.nio.ByteBuffer

/**
 * The picked image's decoded pixels as the core's RGB8 image (H x W x 3), alpha dropped, as Pillow's
 * `Image.open(p).convert("RGB")` reads them: no EXIF rotation, and the bitmap's own bytes (`copyPixelsToBuffer`, no
 * conversion to sRGB as `getPixels` would make); unpremultiplied decoding keeps translucent pixels' values.
 */
fun decodeRgb(context: Context, uri: Uri): RgbImage {
    val options = BitmapFactory.Options().apply {
        inPreferredConfig = Bitmap.Config.ARGB_8888
        inPremultiplied = false
    }
    val decoded = context.contentResolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, options) }
        ?: throw IllegalArgumentException("$uri is not an image Android can decode: pick a PNG or JPEG")
    val bitmap = if (decoded.config == Bitmap.Config.ARGB_8888) decoded else decoded.copy(Bitmap.Config.ARGB_8888, false)
    val rgba = ByteBuffer.allocate(bitmap.rowBytes * bitmap.height)
    bitmap.copyPixelsToBuffer(rgba)  // ARGB_8888 lies in memory as R, G, B, A bytes
    val bytes = rgba.array()
    val rgb = ByteArray(bitmap.width * bitmap.height * 3)
    for (y in 0 until bitmap.height) {
        for (x in 0 until bitmap.width) {
            val from = y * bitmap.rowBytes + x * 4
            val to = (y * bitmap.width + x) * 3
            rgb[to] = bytes[from]
            rgb[to + 1] = bytes[from + 1]
            rgb[to + 2] = bytes[from + 2]
        }
    }
    return RgbImage(bitmap.width, bitmap.height, rgb)
}

/** An opaque bitmap of the image, for display. */
fun RgbImage.toBitmap(): Bitmap {
    val bytes = pixels()
    val argb = IntArray(width() * height()) { i ->
        val r = bytes[3 * i].toInt() and 0xFF
        val g = bytes[3 * i + 1].toInt() and 0xFF
        val b = bytes[3 * i + 2].toInt() and 0xFF
        (0xFF shl 24) or (r shl 16) or (g shl 8) or b
    }
    return Bitmap.createBitmap(argb, width(), height(), Bitmap.Config.ARGB_8888)
}
