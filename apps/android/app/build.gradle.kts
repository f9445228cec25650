plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.compose)
}

android {
    namespace = "dev.edgetrim.demo"
    compileSdk = 36

    defaultConfig {
        applicationId = "dev.edgetrim.demo"
        minSdk = 28
        targetSdk = 36
        versionCode = 1
        versionName = "0.3.0"
        // Both runtimes ship these ABIs; phones are arm64-v8a, x86_64 is for an emulator smoke test.
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    buildFeatures { compose = true }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

dependencies {
    implementation(project(":core"))
    implementation(platform(libs.compose.bom))
    implementation(libs.compose.material3)
    implementation(libs.activity.compose)
    implementation(libs.onnxruntime.android)
    implementation(libs.executorch.android)
}
