package dev.edgetrim.demo

import android.content.Context
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableIntStateOf
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import dev.edgetrim.core.MemoryPlanException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** The user's choices for every run, kept in shared preferences: the memory budget and the CPU threads. */
class RunSettings(context: Context) {
    private val preferences = context.getSharedPreferences("run-settings", Context.MODE_PRIVATE)

    /** MB the chunk scheduler keeps resident (chunks beyond it stream); 0: everything resident. */
    var memoryBudgetMB by mutableIntStateOf(preferences.getInt(BUDGET, 0))
        private set

    /** Threads of XNNPACK (ONNX Runtime) and of ExecuTorch's thread pool. */
    var threads by mutableIntStateOf(preferences.getInt(THREADS, defaultThreads()))
        private set

    /** The budget as the scheduler takes it: null for none. */
    val budgetMB: Double? get() = memoryBudgetMB.takeIf { it > 0 }?.toDouble()

    fun update(memoryBudgetMB: Int = this.memoryBudgetMB, threads: Int = this.threads) {
        this.memoryBudgetMB = memoryBudgetMB.coerceIn(0, 16384)
        this.threads = threads.coerceIn(1, Runtime.getRuntime().availableProcessors())
        preferences.edit().putInt(BUDGET, this.memoryBudgetMB).putInt(THREADS, this.threads).apply()
    }

    companion object {
        private const val BUDGET = "memoryBudgetMB"
        private const val THREADS = "threads"

        /** Four threads, or fewer on a phone with fewer cores: the big cores of most big.LITTLE phones. */
        fun defaultThreads() = minOf(4, Runtime.getRuntime().availableProcessors())
    }
}

/** What a screen shows for a failed run; a budget below the largest chunk names the Settings field to change. */
fun problem(e: Exception): String =
    if (e is MemoryPlanException) e.message("the memory budget (Settings)") else e.message ?: e.toString()

@Composable
fun SettingsScreen(library: ArtifactLibrary, settings: RunSettings) {
    val scope = rememberCoroutineScope()
    var status by remember { mutableStateOf("") }
    Column(Modifier.verticalScroll(rememberScrollState())) {
        Text("Memory", style = MaterialTheme.typography.titleMedium)
        Text(if (settings.memoryBudgetMB == 0) "Budget: all resident" else "Budget: ${settings.memoryBudgetMB} MB")
        Row {
            OutlinedButton(onClick = { settings.update(memoryBudgetMB = settings.memoryBudgetMB - 64) }) { Text("-64 MB") }
            OutlinedButton(onClick = { settings.update(memoryBudgetMB = settings.memoryBudgetMB + 64) }) { Text("+64 MB") }
        }
        Text("Resident now: %.0f MB, peak %.0f MB".format(ProcessMemory.residentMB(), ProcessMemory.peakMB()))
        Spacer(Modifier.height(12.dp))
        Text("CPU threads: ${settings.threads}", style = MaterialTheme.typography.titleMedium)
        Row {
            OutlinedButton(onClick = { settings.update(threads = settings.threads - 1) }) { Text("-1") }
            OutlinedButton(onClick = { settings.update(threads = settings.threads + 1) }) { Text("+1") }
        }
        Spacer(Modifier.height(12.dp))
        Text("Artifacts in ${library.folder}", style = MaterialTheme.typography.titleMedium)
        Button(onClick = {
            status = "copying from ${ArtifactLibrary.PUSHED}…"
            scope.launch {
                status = try {
                    withContext(Dispatchers.IO) { library.importPushed() }
                } catch (e: Exception) {
                    "import failed: ${problem(e)}"
                }
                library.refresh()
            }
        }) { Text("Import from ${ArtifactLibrary.PUSHED}") }
        Text(status, style = MaterialTheme.typography.bodySmall)
        for (entry in library.entries) {
            Text(entry.name)
            Text(
                "${entry.kind}, ${entry.target}" + if (entry.randomWeights) ", random weights" else "",
                style = MaterialTheme.typography.bodySmall,
            )
        }
    }
}
