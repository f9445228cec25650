package dev.edgetrim.demo

import android.net.Uri
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.platform.LocalContext
import dev.edgetrim.core.Contract
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * Photo + prompt -> HiRED visual tokens spliced into the prompt -> prefill -> greedy answer streamed as it decodes
 * (then replaced by the whole answer decoded at once), with TTFT (image in -> first token), decode tokens/s and the
 * resident memory.
 */
@Composable
fun VlmScreen(library: ArtifactLibrary, settings: RunSettings) {
    val context = LocalContext.current
    val scope = rememberCoroutineScope()
    var selection by remember { mutableStateOf<ArtifactLibrary.Entry?>(null) }
    var photo by remember { mutableStateOf<Uri?>(null) }
    var prompt by remember { mutableStateOf("Describe the image in one sentence.") }
    var answer by remember { mutableStateOf("") }
    var status by remember { mutableStateOf("") }
    val picker = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { photo = it ?: photo }
    Column(Modifier.verticalScroll(rememberScrollState())) {
        ArtifactPicker(library, listOf(Contract.VLM), selection) { selection = it }
        OutlinedButton(onClick = { picker.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) }) {
            Text(if (photo == null) "Photo" else "Photo picked")
        }
        OutlinedTextField(prompt, { prompt = it }, Modifier.fillMaxWidth(), label = { Text("Prompt") })
        Button(
            enabled = selection != null && photo != null,
            onClick = {
                val entry = selection ?: return@Button
                val uri = photo ?: return@Button
                val question = prompt
                answer = ""
                val (budget, threads) = settings.budgetMB to settings.threads
                scope.launch {
                    try {
                        status = "verifying ${entry.name}…"
                        val (artifact, image) = withContext(Dispatchers.IO) {
                            library.open(entry.folder, listOf(Contract.VLM)) to decodeRgb(context, uri)
                        }
                        status = "running…"
                        val result = withContext(Dispatchers.Default) {
                            VlmRun(artifact, budget, threads).generate(image, question) { delta ->
                                scope.launch { answer += delta }
                            }
                        }
                        answer = result.text
                        status = result.summary
                    } catch (e: Exception) {
                        status = "error: ${problem(e)}"
                    }
                }
            },
        ) { Text("Ask") }
        Text("Answer", style = MaterialTheme.typography.titleMedium)
        Text(answer)
        Text(status, style = MaterialTheme.typography.bodySmall)
    }
}
