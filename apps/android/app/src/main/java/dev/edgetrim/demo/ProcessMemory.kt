package dev.edgetrim.demo

import android.util.Log
import java.io.File

/** This process's memory as Linux counts it (`/proc/self/status`), the figures `edgetrim bench` reads. */
object ProcessMemory {
    /** Resident set size now (VmRSS), MB. */
    fun residentMB() = statusMB("VmRSS:")

    /** Peak resident set size (VmHWM), MB. */
    fun peakMB() = statusMB("VmHWM:")

    /** Resets the peak to the current resident size (`echo 5 > /proc/self/clear_refs`); false if the kernel refuses. */
    fun resetPeak(): Boolean = try {
        File("/proc/self/clear_refs").writeText("5")
        true
    } catch (e: Exception) {
        Log.w(TAG, "could not reset the peak RSS (${e.message}): each mode's peak includes the earlier modes'")
        false
    }

    /** A `/proc/self/status` line such as `VmHWM:   123456 kB`, in MB. */
    private fun statusMB(key: String): Double =
        File("/proc/self/status").readLines().first { it.startsWith(key) }.trim().split(Regex("\\s+"))[1].toDouble() / 1024
}

/** The logcat tag of the app and the benchmark. */
const val TAG = "edgetrim"
