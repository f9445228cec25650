// The edgetrim Android sample: :app (Compose demo + headless benchmark) on :core (plain Java, tested by `make java-test`).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "edgetrim-android"
include(":app", ":core")
