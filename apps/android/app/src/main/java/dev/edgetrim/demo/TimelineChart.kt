package dev.edgetrim.demo

import androidx.compose.foundation.Canvas
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.width
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import androidx.compose.ui.geometry.Offset
import androidx.compose.ui.geometry.Size
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.unit.dp
import dev.edgetrim.core.ChunkTimeline

/**
 * Load and compute lanes of the chunk scheduler's latest events (seconds on the scheduler's clock), one colour per
 * chunk: loads hidden behind compute show as overlap.
 */
@Composable
fun TimelineChart(events: List<ChunkTimeline.Event>) {
    if (events.isEmpty()) return
    val first = events.minOf { it.start() }
    val last = events.maxOf { it.end() }
    val names = events.map { it.chunk() }.distinct().sorted()
    Row {
        Column(Modifier.width(64.dp)) {
            Text("load", style = MaterialTheme.typography.labelSmall)
            Text("compute", style = MaterialTheme.typography.labelSmall)
        }
        Canvas(Modifier.fillMaxWidth().height(48.dp)) {
            if (last <= first) return@Canvas
            val scale = size.width / (last - first).toFloat()
            val lane = size.height / 2
            for (event in events) {
                val hue = 360f * names.indexOf(event.chunk()) / names.size
                val top = if (event.kind() == ChunkTimeline.Kind.LOAD) 2f else lane + 2f
                drawRect(
                    Color.hsv(hue, 0.7f, 0.9f),
                    topLeft = Offset(((event.start() - first) * scale).toFloat(), top),
                    size = Size(maxOf(1f, ((event.end() - event.start()) * scale).toFloat()), lane - 4f),
                )
            }
        }
    }
}
