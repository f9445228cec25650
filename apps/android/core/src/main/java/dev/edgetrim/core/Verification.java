package dev.edgetrim.core;

import dev.edgetrim.core.VerificationException.Reason;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * sha256 verification of an artifact's listed files, the checks of Python's {@code open_artifact}.
 *
 * <p>Digest of a file: sha256 of its bytes. Digest of a folder ({@code .mlpackage}): sha256 over its files in order
 * of their relative POSIX path (UTF-8 byte order), each contributing that path (UTF-8) then its own sha256 (32 raw
 * bytes); its size is the sum of its files' sizes. Symlinked folders inside are listed, not entered.
 */
public final class Verification {
    private Verification() {}

    /** A digest: byte count and lowercase hex sha256. */
    public record Digest(long bytes, String sha256) {}

    /** Reads, checks and verifies the artifact at {@code folder}; its manifest, or the refusal with its reason. */
    public static Manifest verify(Path folder) throws VerificationException {
        return Artifact.open(folder).manifest();
    }

    /** Refuses the artifact if a listed file (of a chunk, or top-level data) is missing, outside the folder, resized or altered. */
    public static void verifyFiles(Artifact artifact) throws VerificationException {
        for (Manifest.Chunk chunk : artifact.chunks()) {
            for (Manifest.FileEntry entry : chunk.files()) verify(artifact.root(), entry, "chunk '" + chunk.name() + "'");
        }
        for (Manifest.FileEntry entry : artifact.manifest().files()) verify(artifact.root(), entry, entry.role() + " data");
    }

    private static void verify(Path root, Manifest.FileEntry entry, String owner) throws VerificationException {
        Path file = root.resolve(entry.path());
        if (!Files.exists(file)) {
            throw new VerificationException(Reason.MISSING, owner + ": file " + entry.path() + " is missing: re-export or re-copy it");
        }
        checkInside(root, file, entry, owner);
        Digest digest;
        try {
            digest = digest(file);
        } catch (IOException e) {
            throw new VerificationException(Reason.MISSING,
                    owner + ": " + entry.path() + " cannot be read (" + e + "): re-copy the artifact");
        }
        if (digest.bytes() != entry.bytes()) {
            throw new VerificationException(Reason.SIZE, owner + ": " + entry.path() + " has " + digest.bytes()
                    + " bytes, the manifest says " + entry.bytes() + ": the file is truncated or replaced, re-copy the artifact");
        }
        if (!digest.sha256().equals(entry.sha256())) {
            throw new VerificationException(Reason.SHA256, owner + ": " + entry.path()
                    + " fails its sha256 check: the file is corrupted or altered, re-copy the artifact");
        }
    }

    /** Refuses a listed file, or anything inside a listed folder, that resolves outside the artifact folder. */
    private static void checkInside(Path root, Path file, Manifest.FileEntry entry, String owner) throws VerificationException {
        Path inside;
        try {
            inside = root.toRealPath();
        } catch (IOException e) {
            throw new VerificationException(Reason.MISSING, root + " cannot be resolved: pass an existing artifact folder");
        }
        List<Path> targets = new ArrayList<>(List.of(file));
        try {
            if (Files.isDirectory(file) && !Files.isSymbolicLink(file)) {
                for (Entry found : walk(file, "")) targets.add(found.path());
            }
        } catch (IOException e) {
            throw new VerificationException(Reason.MISSING,
                    owner + ": " + entry.path() + " cannot be listed (" + e + "): re-copy the artifact");
        }
        for (Path target : targets) {
            Path resolved;
            try {
                resolved = target.toRealPath();
            } catch (IOException e) {
                throw new VerificationException(Reason.MISSING,
                        owner + ": " + entry.path() + " holds " + target + ", a link to nothing: re-copy the artifact");
            }
            if (!resolved.startsWith(inside)) {
                throw new VerificationException(Reason.OUTSIDE, owner + ": " + entry.path()
                        + " resolves outside the artifact folder (" + resolved + "): "
                        + "copy the real files into the artifact instead of linking to them");
            }
        }
    }

    /** Byte count and sha256 of a file, or of a folder by the folder rule. */
    public static Digest digest(Path path) throws IOException {
        if (!Files.isDirectory(path)) {
            MessageDigest hasher = sha256();
            long bytes = hashFile(path, hasher);
            return new Digest(bytes, hex(hasher.digest()));
        }
        List<Entry> files = new ArrayList<>();
        for (Entry found : walk(path, "")) {
            if (!found.isDirectory()) files.add(found);
        }
        files.sort((a, b) -> Arrays.compareUnsigned(
                a.relative().getBytes(StandardCharsets.UTF_8), b.relative().getBytes(StandardCharsets.UTF_8)));
        MessageDigest folder = sha256();
        long bytes = 0;
        for (Entry file : files) {
            MessageDigest hasher = sha256();
            bytes += hashFile(file.path(), hasher);
            folder.update(file.relative().getBytes(StandardCharsets.UTF_8));
            folder.update(hasher.digest());
        }
        return new Digest(bytes, hex(folder.digest()));
    }

    /** Lowercase hexadecimal, two digits a byte. */
    public static String hex(byte[] digest) {
        StringBuilder out = new StringBuilder(digest.length * 2);
        for (byte b : digest) out.append(Character.forDigit(b >> 4 & 15, 16)).append(Character.forDigit(b & 15, 16));
        return out.toString();
    }

    /** Feeds the file to {@code hasher} 1 MiB at a time; its byte count. */
    private static long hashFile(Path path, MessageDigest hasher) throws IOException {
        byte[] block = new byte[1 << 20];
        long bytes = 0;
        try (InputStream in = Files.newInputStream(path)) {
            for (int n; (n = in.read(block)) > 0; bytes += n) hasher.update(block, 0, n);
        }
        return bytes;
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this JVM lacks SHA-256, which every Java platform must provide", e);
        }
    }

    /** Something under a folder: its relative POSIX path, its path, whether it is (or links to) a folder. */
    private record Entry(String relative, Path path, boolean isDirectory) {}

    /** Everything under a folder, as {@code os.walk} lists it: a symlink to a folder is listed, not entered. */
    private static List<Entry> walk(Path folder, String prefix) throws IOException {
        List<Entry> found = new ArrayList<>();
        List<Path> children;
        try (Stream<Path> list = Files.list(folder)) {
            children = list.collect(Collectors.toList());
        }
        for (Path child : children) {
            String relative = prefix + child.getFileName();
            boolean folderLike = Files.isDirectory(child);
            found.add(new Entry(relative, child, folderLike));
            if (folderLike && !Files.isSymbolicLink(child)) found.addAll(walk(child, relative + "/"));
        }
        return found;
    }
}
