package dev.hive

import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native
import java.util.concurrent.atomic.AtomicBoolean

/**
 * The native library's lifecycle on the JVM.
 *
 * - Callbacks: the native runtime's threads call into Kotlin to hand over jobs
 *   and to wake suspended calls. By
 *   default JNA attaches such a thread to the JVM for one callback and
 *   detaches it afterwards, which costs more than the task itself; here the
 *   callbacks keep their threads attached (as daemons, named `hive-native`)
 *   until the threads end.
 * - Exit: a JVM shutdown hook stops every worker (in-flight handlers get
 *   [GRACE_MS] to finish) and the native runtime before the JVM goes away, so
 *   no native thread calls into a dying JVM.
 */
internal object NativeLifecycle {
    private const val GRACE_MS: Long = 2_000
    private val installed = AtomicBoolean(false)

    fun install() {
        if (!installed.compareAndSet(false, true)) return
        val attached = CallbackThreadInitializer(true, false, "hive-native")
        for (callback in listOf(
            dev.hive.ffi.uniffiRustFutureContinuationCallbackImpl,
            dev.hive.ffi.uniffiCallbackInterfaceAttemptSink.run,
            dev.hive.ffi.uniffiCallbackInterfaceAttemptSink.cancel,
            dev.hive.ffi.uniffiCallbackInterfaceAttemptSink.uniffiFree,
            dev.hive.ffi.uniffiCallbackInterfaceAttemptSink.uniffiClone,
        )) {
            Native.setCallbackThreadInitializer(callback, attached)
        }
        Runtime.getRuntime().addShutdownHook(
            Thread({ dev.hive.ffi.shutdownAll(GRACE_MS.toULong()) }, "hive-shutdown"),
        )
    }
}
