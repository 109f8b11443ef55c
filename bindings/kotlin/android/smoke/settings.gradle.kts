// The emulator smoke test of Hive's AAR (.github/workflows/android.yml):
// `gradle -p bindings/kotlin/android/smoke connectedDebugAndroidTest` after
// scripts/android-package, with an emulator or a device attached.
//
// The AAR and its POM are read from the Maven layout scripts/android-package
// writes (target/android/m2 at the repository's root; -PhiveRepo=DIR for
// another), so its dependencies (JNA as an AAR, coroutines, serialization)
// resolve as an app's would.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

// The same default as in build.gradle.kts.
val hiveRepo: File = settingsDir.resolve(
    providers.gradleProperty("hiveRepo").getOrElse("../../../../target/android/m2"),
).canonicalFile

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        maven {
            name = "hiveLocal"
            url = hiveRepo.toURI()
            content { includeGroup("dev.hive") }
        }
        google()
        mavenCentral()
    }
}

rootProject.name = "hive-android-smoke"
