// A library module with only an instrumented test: it runs on the emulator
// against the AAR (dev.hive:hive-kotlin) that scripts/android-package built.
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.library") version "8.13.0"
    id("org.jetbrains.kotlin.android") version "2.4.21"
}

// The AAR's version: -PhiveVersion=..., else the one version in the local repository.
val hiveRepo: File = rootDir.resolve(
    providers.gradleProperty("hiveRepo").getOrElse("../../../../target/android/m2"),
).canonicalFile
val hiveVersion: String = providers.gradleProperty("hiveVersion").orNull
    ?: hiveRepo.resolve("dev/hive/hive-kotlin").listFiles { f -> f.isDirectory }?.singleOrNull()?.name
    ?: error("no single dev.hive:hive-kotlin version in $hiveRepo: run scripts/android-package first (or pass -PhiveVersion)")

android {
    namespace = "dev.hive.smoke"
    compileSdk = 35

    defaultConfig {
        minSdk = 26
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    // `@aar` picks the AAR; isTransitive keeps its POM's dependencies
    // (kotlin-stdlib, coroutines, serialization, JNA's AAR).
    androidTestImplementation("dev.hive:hive-kotlin:$hiveVersion@aar") { isTransitive = true }
    androidTestImplementation("androidx.test:runner:1.6.2")
    androidTestImplementation("androidx.test.ext:junit:1.2.1")
    androidTestImplementation("junit:junit:4.13.2")
}
