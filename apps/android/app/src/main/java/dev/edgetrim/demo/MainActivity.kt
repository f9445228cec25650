package dev.edgetrim.demo

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Surface
import androidx.compose.material3.Tab
import androidx.compose.material3.TabRow
import androidx.compose.material3.Text
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableIntStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp

/** Four tabs over the artifacts in the app's files folder: Vision, VLM, Video and Settings (the iOS demo's screens). */
class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val library = ArtifactLibrary(this)
        val settings = RunSettings(this)
        library.refresh()
        setContent {
            MaterialTheme {
                Surface(Modifier.fillMaxSize()) {
                    var tab by rememberSaveable { mutableIntStateOf(0) }
                    val titles = remember { listOf("Vision", "VLM", "Video", "Settings") }
                    Column {
                        TabRow(selectedTabIndex = tab) {
                            titles.forEachIndexed { i, title -> Tab(tab == i, onClick = { tab = i }, text = { Text(title) }) }
                        }
                        Column(Modifier.padding(16.dp)) {
                            when (tab) {
                                0 -> VisionScreen(library, settings)
                                1 -> VlmScreen(library, settings)
                                2 -> VideoScreen(library, settings)
                                else -> SettingsScreen(library, settings)
                            }
                        }
                    }
                }
            }
        }
    }
}
