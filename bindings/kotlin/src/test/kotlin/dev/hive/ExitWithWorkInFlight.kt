package dev.hive

import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.json.JsonPrimitive
import java.util.concurrent.atomic.AtomicInteger
import kotlin.system.exitProcess
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds

/**
 * The child of ExitTest: handlers that run for a long time (suspended and
 * busy), a feed being collected, then the JVM exits with all of it in flight.
 */
fun main(args: Array<String>) {
    val mode = args.firstOrNull() ?: "exit"
    val running = AtomicInteger()
    val enough = CompletableDeferred<Unit>()
    runBlocking {
        val hive = Hive.open("memory://")
        hive.startWorker(ops, worker("exiting") {
            system = true
            capacity = 64
            handler("long") {
                if (running.incrementAndGet() >= 32) enough.complete(Unit)
                delay(30.seconds)
                JsonPrimitive("never")
            }
            handler("busy") {
                running.incrementAndGet()
                while (true) {
                    log("tick")
                    delay(5.milliseconds)
                }
                @Suppress("UNREACHABLE_CODE")
                JsonPrimitive("never")
            }
        })
        hive.submitAll(alice, (1..40).map { taskSpec("long") } + (1..8).map { taskSpec("busy") })
        enough.await()
        println("in flight at exit: ${running.get()}")
        System.out.flush()
        if (mode == "exit") exitProcess(0)
    }
    // mode "return": main ends with the engine still open and handlers
    // running; the JVM must still exit (no native thread keeps it alive).
}
