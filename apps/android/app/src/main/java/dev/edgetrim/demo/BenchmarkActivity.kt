package dev.edgetrim.demo

import android.app.Activity
import android.os.Bundle
import android.util.Log
import android.view.WindowManager
import android.widget.TextView
import java.io.File
import kotlin.concurrent.thread

/**
 * Headless `edgetrim bench` for a vision- or text-encoder artifact pushed to /data/local/tmp/edgetrim/NAME:
 *
 * `adb shell am start -n dev.edgetrim.demo/.BenchmarkActivity --es artifact /data/local/tmp/edgetrim/NAME
 * [--ei repeats 20] [--el memory_budget_mb MB | --ef memory_budget_mb MB] [--ei threads N]`
 *
 * Copies the artifact into the files folder (or uses the copy of that name already there, made with `run-as`),
 * verifies it with the core, runs [Bench] (repeats default 20, budget default the two largest chunks plus 5%, threads
 * default the Settings' value), writes `files/bench.json`, logs where (tag `edgetrim`) and finishes.
 */
class BenchmarkActivity : Activity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        val status = TextView(this).apply { setPadding(48, 48, 48, 48) }
        setContentView(status)
        val pushed = intent.getStringExtra("artifact")
        val repeats = intent.getIntExtra("repeats", 20)
        @Suppress("DEPRECATION")  // the budget may come as --el or --ef: read whichever number was given
        val budgetMB = (intent.extras?.get("memory_budget_mb") as? Number)?.toDouble()
        val threads = intent.getIntExtra("threads", RunSettings(this).threads)
        thread(name = "edgetrim-bench") {
            val message = try {
                requireNotNull(pushed) { "pass --es artifact /data/local/tmp/edgetrim/NAME" }
                val library = ArtifactLibrary(this)
                val artifact = library.open(library.importOrFind(pushed), Bench.KINDS)
                val report = Bench.run(artifact, pushed, budgetMB, repeats, threads) { mode ->
                    Log.i(TAG, "bench $mode")
                    runOnUiThread { status.text = "edgetrim bench: $mode…" }
                }
                val out = File(filesDir, "bench.json")
                out.writeText(report.toString(2))
                "wrote ${out.absolutePath}"
            } catch (e: Exception) {
                Log.e(TAG, "bench failed", e)
                "bench failed: ${e.message}"
            }
            Log.i(TAG, message)
            runOnUiThread {
                status.text = message
                finish()
            }
        }
    }
}
