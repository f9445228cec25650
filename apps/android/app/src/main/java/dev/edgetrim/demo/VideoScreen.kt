package dev.edgetrim.demo

import android.content.Context
import android.net.Uri
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.Image
import androidx.compose.foundation.horizontalScroll
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableIntStateOf
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.FilterQuality
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.unit.dp
import dev.edgetrim.core.Contract
import java.io.File
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * Caption embeddings (a .npy [L', C_cap] file, or a seeded stand-in) -> STDiT3 denoiser with TDTM for the first steps
 * and a fixed or adaptive LPL leap -> latent frames (one grey tile per channel and frame: decoding latents to pixels
 * needs the VAE decoder, not exported), with the chunk timeline of the denoising steps. The iOS screen encodes caption
 * text with a text-encoder artifact instead; the core's tokenizer reads byte-level BPE only, not T5's.
 */
@Composable
fun VideoScreen(library: ArtifactLibrary, settings: RunSettings) {
    val context = LocalContext.current
    val scope = rememberCoroutineScope()
    var selection by remember { mutableStateOf<ArtifactLibrary.Entry?>(null) }
    var captionFile by remember { mutableStateOf<Uri?>(null) }
    var steps by remember { mutableIntStateOf(30) }
    var mergeSteps by remember { mutableIntStateOf(15) }
    var leapAt by remember { mutableIntStateOf(15) }
    var adaptive by remember { mutableStateOf(false) }
    var result by remember { mutableStateOf<VideoResult?>(null) }
    var status by remember { mutableStateOf("") }
    val picker = rememberLauncherForActivityResult(ActivityResultContracts.OpenDocument()) { captionFile = it ?: captionFile }
    Column(Modifier.verticalScroll(rememberScrollState())) {
        ArtifactPicker(library, listOf(Contract.VIDEO_DENOISER), selection) { selection = it }
        Row(verticalAlignment = Alignment.CenterVertically) {
            OutlinedButton(onClick = { picker.launch(arrayOf("*/*")) }) { Text("Caption .npy") }
            Text(if (captionFile == null) " seeded stand-in caption" else " picked file")
        }
        Stepper("Steps $steps", { steps = (steps + it).coerceIn(2, 50); mergeSteps = minOf(mergeSteps, steps); leapAt = minOf(leapAt, steps - 1) })
        Stepper("TDTM steps $mergeSteps", { mergeSteps = (mergeSteps + it).coerceIn(0, steps) })
        Row(verticalAlignment = Alignment.CenterVertically) {
            Switch(adaptive, { adaptive = it })
            Text(if (adaptive) " adaptive LPL (leap once velocities stall)" else " fixed leap")
        }
        Stepper(if (adaptive) "LPL from step $leapAt" else "Leap at $leapAt", { leapAt = (leapAt + it).coerceIn(1, steps - 1) })
        Button(enabled = selection != null, onClick = {
            val entry = selection ?: return@Button
            val plan = VideoPlan(steps, mergeSteps, leapAt.takeIf { !adaptive }, leapAt.takeIf { adaptive })
            val uri = captionFile
            val (budget, threads) = settings.budgetMB to settings.threads
            scope.launch {
                try {
                    status = "verifying ${entry.name}…"
                    val (artifact, caption) = withContext(Dispatchers.IO) {
                        library.open(entry.folder, listOf(Contract.VIDEO_DENOISER)) to uri?.let { picked -> copyToCache(context, picked) }
                    }
                    status = "sampling…"
                    val sampled = withContext(Dispatchers.Default) {
                        VideoRun(artifact, budget, threads).sample(caption, plan, seed = 0) { step ->
                            scope.launch { status = "sampling: step ${step + 1} of ${plan.steps}" }
                        }
                    }
                    result = sampled
                    status = sampled.summary
                } catch (e: Exception) {
                    status = "error: ${problem(e)}"
                }
            }
        }) { Text("Generate") }
        Text(status)
        result?.let { r ->
            val tiles = remember(r) { r.tiles.map { channel -> channel.map { it.toBitmap() } } }
            for (channel in tiles) {
                Row(Modifier.horizontalScroll(rememberScrollState())) {
                    for (tile in channel) {
                        Image(tile.asImageBitmap(), null, Modifier.padding(2.dp).size(64.dp), filterQuality = FilterQuality.None)
                    }
                }
            }
            TimelineChart(r.timeline)
        }
    }
}

/** A label with - and + buttons; [step] gets -1 or +1. */
@Composable
private fun Stepper(label: String, step: (Int) -> Unit) {
    Row(verticalAlignment = Alignment.CenterVertically) {
        OutlinedButton(onClick = { step(-1) }) { Text("-") }
        OutlinedButton(onClick = { step(1) }) { Text("+") }
        Text(" $label")
    }
}

/** A picked document copied into the cache folder, where the core reads it as a file (`caption.npy`). */
private fun copyToCache(context: Context, uri: Uri): File {
    val file = File(context.cacheDir, "caption.npy")
    val input = context.contentResolver.openInputStream(uri) ?: throw IllegalArgumentException("cannot read $uri")
    input.use { source -> file.outputStream().use { source.copyTo(it) } }
    return file
}
