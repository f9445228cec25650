package dev.edgetrim.core;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.junit.runner.Description;
import org.junit.runner.JUnitCore;
import org.junit.runner.Result;
import org.junit.runner.notification.Failure;
import org.junit.runner.notification.RunListener;

/**
 * Runs every {@code *Test} class compiled into the folder given as the first argument and closes with one line,
 * {@code N passed, N failed}. Exit status 1 when a test failed or none ran.
 */
public final class RunAllTests {
    private RunAllTests() {}

    public static void main(String[] args) throws IOException, ClassNotFoundException {
        Path classes = Paths.get(args.length > 0 ? args[0] : "build/test-classes");
        List<Class<?>> tests = new ArrayList<>();
        try (Stream<Path> files = Files.walk(classes)) {
            for (Path file : files.sorted().collect(Collectors.toList())) {
                String name = classes.relativize(file).toString();
                if (!name.endsWith("Test.class") || name.contains("$")) continue;
                tests.add(Class.forName(name.substring(0, name.length() - ".class".length()).replace('/', '.')));
            }
        }
        JUnitCore core = new JUnitCore();
        core.addListener(new RunListener() {
            @Override
            public void testFinished(Description description) {
                System.out.println("  " + description.getClassName().replace("dev.edgetrim.core.", "") + "."
                        + description.getMethodName());
            }

            @Override
            public void testFailure(Failure failure) {
                System.out.println("FAIL " + failure.getTestHeader() + ": " + failure.getMessage());
                System.out.println(failure.getTrace());
            }
        });
        Result result = core.run(tests.toArray(new Class<?>[0]));
        int failed = result.getFailureCount();
        int passed = result.getRunCount() - failed;
        System.out.println(tests.size() + " test classes, " + result.getIgnoreCount() + " ignored, "
                + result.getRunTime() + " ms");
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 && result.getRunCount() > 0 ? 0 : 1);
    }
}
