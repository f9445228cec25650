// :core - plain Java 17, no Android imports (the repository's `make java-test` builds and tests it with javac and
// Debian's JUnit 4 on machines without Gradle). On a phone org.json is the platform's; off the phone, tests use
// AOSP's own org.json (the same API) from Maven Central.
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

dependencies {
    compileOnly(libs.android.json)
    testImplementation(libs.android.json)
    testImplementation(libs.junit)
}

tasks.test {
    // The conformance vectors: the same files the Python runtime and EdgetrimKit (Swift) pass.
    systemProperty("edgetrim.conformance", rootDir.resolve("../conformance").absolutePath)
}
