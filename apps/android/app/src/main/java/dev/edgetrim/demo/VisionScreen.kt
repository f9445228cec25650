package dev.edgetrim.demo

import android.graphics.Bitmap
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.Canvas
import androidx.compose.foundation.Image
import androidx.compose.foundation.horizontalScroll
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.DropdownMenu
import androidx.compose.material3.DropdownMenuItem
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.geometry.Offset
import androidx.compose.ui.geometry.Size
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.graphics.FilterQuality
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.graphics.drawscope.Stroke
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.unit.dp
import dev.edgetrim.core.Contract
import dev.edgetrim.core.Overlay
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** Pick a photo -> HiRED's K tokens, the budget of every partition, the kept-token overlay, the latency. */
@Composable
fun VisionScreen(library: ArtifactLibrary, settings: RunSettings) {
    val context = LocalContext.current
    val scope = rememberCoroutineScope()
    var selection by remember { mutableStateOf<ArtifactLibrary.Entry?>(null) }
    var result by remember { mutableStateOf<VisionResult?>(null) }
    var status by remember { mutableStateOf("Pick an artifact and a photo") }
    val picker = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        val entry = selection
        if (uri == null || entry == null) return@rememberLauncherForActivityResult
        scope.launch {
            try {
                status = "verifying ${entry.name}…"
                val (artifact, image) = withContext(Dispatchers.IO) {
                    library.open(entry.folder, listOf(Contract.VISION_ENCODER)) to decodeRgb(context, uri)
                }
                status = "running…"
                val (budget, threads) = settings.budgetMB to settings.threads
                val run = withContext(Dispatchers.Default) { encodeImage(artifact, image, budget, threads) }
                result = run
                status = "done: ${run.plan}"
            } catch (e: Exception) {
                status = "error: ${problem(e)}"
            }
        }
    }
    Column(Modifier.verticalScroll(rememberScrollState())) {
        ArtifactPicker(library, listOf(Contract.VISION_ENCODER), selection) { selection = it }
        Button(
            onClick = { picker.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) },
            enabled = selection != null,
        ) { Text("Photo") }
        Text(status)
        result?.let { r ->
            Text("Kept tokens: ${r.cells.size} (${r.budgets.joinToString(" ")})", style = MaterialTheme.typography.titleMedium)
            val views = remember(r) { r.views.map { it.toBitmap() } }
            Row(Modifier.horizontalScroll(rememberScrollState())) {
                views.forEachIndexed { p, view -> KeptOverlay(view, r.side, r.cells.filter { it.partition() == p }) }
            }
            Text("%.1f ms".format(r.milliseconds))
            TimelineChart(r.timeline)
        }
    }
}

/** One view ([side] x [side] patches) with the dropped patches dimmed and the kept ones outlined. */
@Composable
fun KeptOverlay(view: Bitmap, side: Int, kept: List<Overlay.KeptCell>) {
    val keptIndices = remember(kept) { kept.map { it.row() * side + it.col() }.toSet() }
    Box(Modifier.padding(end = 8.dp).size(224.dp)) {
        Image(view.asImageBitmap(), null, Modifier.matchParentSize(), filterQuality = FilterQuality.None)
        Canvas(Modifier.matchParentSize()) {
            val cell = Size(size.width / side, size.height / side)
            for (index in 0 until side * side) {
                val topLeft = Offset(index % side * cell.width, index / side * cell.height)
                if (index in keptIndices) {
                    drawRect(Color.Yellow, topLeft, cell, style = Stroke(width = 1f))
                } else {
                    drawRect(Color.Black.copy(alpha = 0.6f), topLeft, cell)
                }
            }
        }
    }
}

/** A menu over the library's artifacts of some kinds (verified when a run opens them). */
@Composable
fun ArtifactPicker(
    library: ArtifactLibrary, kinds: List<String>, selection: ArtifactLibrary.Entry?,
    onSelect: (ArtifactLibrary.Entry) -> Unit,
) {
    var expanded by remember { mutableStateOf(false) }
    Box {
        OutlinedButton(onClick = { expanded = true }) {
            Text(selection?.let { "${it.name} (${it.target})" } ?: "Artifact: ${kinds.joinToString(" or ")}")
        }
        DropdownMenu(expanded, onDismissRequest = { expanded = false }) {
            val entries = library.entries(kinds)
            if (entries.isEmpty()) DropdownMenuItem(text = { Text("none: import in Settings") }, onClick = { expanded = false })
            for (entry in entries) {
                DropdownMenuItem(
                    text = { Text("${entry.name} (${entry.target})") },
                    onClick = { onSelect(entry); expanded = false },
                )
            }
        }
    }
}
