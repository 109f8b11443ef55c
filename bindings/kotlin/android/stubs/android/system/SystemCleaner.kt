// Compile-only stub (see ../../README.md): removed from classes.jar.
@file:Suppress("unused")

package android.system

import java.lang.ref.Cleaner

object SystemCleaner {
    // A static method in android.jar (API 33+).
    @JvmStatic
    fun cleaner(): Cleaner = throw UnsupportedOperationException("compile-only stub")
}
