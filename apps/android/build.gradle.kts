// Plugins are declared here once and applied in the modules (:core uses Gradle's own `java-library`).
plugins {
    alias(libs.plugins.android.application) apply false
    alias(libs.plugins.kotlin.compose) apply false
}
