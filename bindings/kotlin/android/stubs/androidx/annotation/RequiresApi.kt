// Compile-only stub (see ../../README.md): removed from classes.jar.
@file:Suppress("unused")

package androidx.annotation

// Class-file retention, as in androidx.annotation: lint reads it, nothing at run time does.
@MustBeDocumented
@Retention(AnnotationRetention.BINARY)
@Target(
    AnnotationTarget.CLASS,
    AnnotationTarget.FUNCTION,
    AnnotationTarget.PROPERTY_GETTER,
    AnnotationTarget.PROPERTY_SETTER,
    AnnotationTarget.CONSTRUCTOR,
    AnnotationTarget.FIELD,
    AnnotationTarget.FILE,
)
annotation class RequiresApi(val value: Int = 1, val api: Int = 1)
