package dev.edgetrim.demo

import android.content.Context
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.setValue
import dev.edgetrim.core.Artifact
import dev.edgetrim.core.Contract
import java.io.File
import java.io.IOException
import java.nio.file.FileVisitResult
import java.nio.file.Files
import java.nio.file.LinkOption
import java.nio.file.Path
import java.nio.file.SimpleFileVisitor
import java.nio.file.StandardCopyOption
import java.nio.file.attribute.BasicFileAttributes

/**
 * The artifacts in the app's files folder (`files/artifacts/NAME`), copied there from where `adb push` puts them
 * (`/data/local/tmp/edgetrim/NAME`); never bundled in the APK. Listing reads each manifest only; opening verifies the
 * artifact with the core (`Artifact.open`: size and sha256 of every file, nothing outside its folder, schema version,
 * kind) every time.
 */
class ArtifactLibrary(context: Context) {
    /** A folder whose manifest.json the core reads, described by it (not yet verified). */
    data class Entry(val folder: File, val kind: String, val target: String, val randomWeights: Boolean) {
        val name: String get() = folder.name
    }

    val folder = File(context.filesDir, "artifacts")

    var entries by mutableStateOf(listOf<Entry>())
        private set

    /** Re-reads the files folder (call on the main thread); folders the core cannot read are left out. */
    fun refresh() {
        entries = folder.listFiles().orEmpty().filter { !it.name.startsWith(".") }.sortedBy { it.name }.mapNotNull { dir ->
            runCatching { Artifact.read(dir.toPath()) }.getOrNull()?.let { artifact ->
                Entry(dir, artifact.kind(), artifact.target(), artifact.manifest().source().randomWeights())
            }
        }
    }

    fun entries(kinds: List<String>) = entries.filter { it.kind in kinds }

    /** Copies every artifact folder under [PUSHED] into the files folder; what happened, for the screen. */
    fun importPushed(): String {
        val pushed = File(PUSHED).listFiles()
            ?: return "cannot list $PUSHED: push artifacts there with adb, or copy them with run-as (README.md)"
        val copied = pushed.filter { File(it, Contract.MANIFEST).isFile }.map { import(it).name }
        return if (copied.isEmpty()) "no artifact folder in $PUSHED" else "copied ${copied.joinToString()}"
    }

    /**
     * Copies the artifact folder [source] to `files/artifacts/NAME`, replacing an earlier copy only once the new one
     * is complete (written as `.NAME.partial`, then renamed). Symbolic links are copied as links, never followed, so
     * that verification still refuses one that points outside the artifact.
     */
    fun import(source: File): File {
        require(File(source, Contract.MANIFEST).isFile) {
            "$source holds no ${Contract.MANIFEST}: push the folder `edgetrim export` wrote"
        }
        Files.createDirectories(folder.toPath())
        val target = File(folder, source.name).toPath()
        val partial = File(folder, ".${source.name}.partial").toPath()
        deleteTree(partial)
        val from = source.toPath()
        Files.walk(from).use { paths ->
            for (path in paths) {
                val to = partial.resolve(from.relativize(path).toString())
                if (Files.isDirectory(path, LinkOption.NOFOLLOW_LINKS)) {
                    Files.createDirectories(to)
                } else {
                    Files.copy(path, to, LinkOption.NOFOLLOW_LINKS)
                }
            }
        }
        deleteTree(target)
        Files.move(partial, target, StandardCopyOption.ATOMIC_MOVE)
        return target.toFile()
    }

    /**
     * The artifact for a path given to the benchmark: copied from an artifact folder the app can read, else the copy
     * of that name already in the files folder (made with `run-as`, README.md).
     */
    fun importOrFind(path: String): File {
        val source = File(path)
        if (File(source, Contract.MANIFEST).isFile) return import(source)
        val copy = File(folder, source.name)
        require(File(copy, Contract.MANIFEST).isFile) {
            "cannot read $path and there is no $copy: push the artifact folder there, or copy it with run-as (README.md)"
        }
        return copy
    }

    /** Verifies and opens an artifact of [kinds] (hashing a large artifact takes seconds: call off the main thread). */
    fun open(folder: File, kinds: List<String>): Artifact = Artifact.open(folder.toPath(), kinds)

    companion object {
        /** Where artifacts are pushed: `adb push NAME /data/local/tmp/edgetrim/`. */
        const val PUSHED = "/data/local/tmp/edgetrim"

        /** Deletes [root] and what is under it; links are deleted, never followed. */
        private fun deleteTree(root: Path) {
            if (!Files.exists(root, LinkOption.NOFOLLOW_LINKS)) return
            Files.walkFileTree(root, object : SimpleFileVisitor<Path>() {
                override fun visitFile(file: Path, attrs: BasicFileAttributes): FileVisitResult {
                    Files.delete(file)
                    return FileVisitResult.CONTINUE
                }

                override fun postVisitDirectory(dir: Path, exc: IOException?): FileVisitResult {
                    if (exc != null) throw exc
                    Files.delete(dir)
                    return FileVisitResult.CONTINUE
                }
            })
        }
    }
}
