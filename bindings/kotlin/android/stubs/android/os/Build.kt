// Compile-only stub (see ../../README.md): removed from classes.jar.
@file:Suppress("ClassName", "unused")

package android.os

object Build {
    object VERSION {
        // Not a constant: the real field is read at run time.
        @JvmField
        val SDK_INT: Int = Integer.getInteger("android.stub.sdk", 0)
    }

    object VERSION_CODES {
        // A constant in android.jar too (inlined by the compiler).
        const val UPSIDE_DOWN_CAKE: Int = 34
    }
}
