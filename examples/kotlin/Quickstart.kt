// The README's main job, from Kotlin: an embedded Hive with two Kotlin
// handlers, a few tasks (one fails once and is retried), and every task's
// event stream printed as it happens.
//
// Run: bindings/kotlin/scripts/test runs it (HIVE_URL picks the backend;
// default memory://). By hand, after that script has built the classpath:
//   java -cp "$(cat bindings/kotlin/target/classpath.txt)" \
//        -Djna.library.path=target/debug dev.hive.examples.QuickstartKt
package dev.hive.examples

import dev.hive.Hive
import dev.hive.Principals
import dev.hive.TaskEvent
import dev.hive.TaskFailure
import dev.hive.taskSpec
import dev.hive.worker
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.flow.onEach
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.put
import java.util.concurrent.atomic.AtomicInteger
import kotlin.system.exitProcess
import kotlin.time.Duration.Companion.milliseconds

fun main() {
    val failed = runBlocking {
        val url = System.getenv("HIVE_URL") ?: "memory://"
        Hive.open(url).use { hive ->
            println("hive opened on $url")

            // Who is calling: a user submits; Hive's system principal runs a system node.
            val alice = Principals.user("acme", "alice")
            val ops = Principals.system()

            // Two handlers on one in-process worker node.
            val translateCalls = AtomicInteger()
            val handle = hive.startWorker(ops, worker("quickstart-node") {
                capacity = 4
                system = true
                handler("summarize") {
                    val text = input.jsonObject["text"]!!.jsonPrimitive.content
                    log("summarizing ${text.length} characters")
                    buildJsonObject { put("summary", text.split(" ").take(4).joinToString(" ") + "…") }
                }
                handler("translate") {
                    if (translateCalls.incrementAndGet() == 1) { // fails on its first attempt to show a retry
                        throw TaskFailure("upstream_busy", "translation service busy")
                    }
                    val text = input.jsonObject["text"]!!.jsonPrimitive.content
                    buildJsonObject { put("fr", text.replace("hello", "bonjour")) }
                }
            })

            val specs = listOf(
                taskSpec("summarize", text("Hive runs agent tasks on worker nodes and streams their events")),
                taskSpec("translate", text("hello world")) { retry { maxAttempts = 3; initialInterval = 200.milliseconds } },
                taskSpec("summarize", text("every task ends with exactly one terminal event")),
            )

            // From seq 0: replay what is stored, then follow live; each flow completes after the terminal event.
            val streams = specs.map { spec ->
                val submitted = hive.submit(alice, spec)
                println("submitted ${submitted.id} (${spec.agent})")
                async {
                    hive.events(alice, submitted.id).onEach { e -> print(spec.agent, e) }.toList()
                }
            }
            val failed = streams.awaitAll().count { events ->
                check(events.isNotEmpty() && events.last().isTerminal) { "a stream ended without a terminal event" }
                events.last().kind != "succeeded"
            }
            handle.shutdown()
            failed
        }
    }
    if (failed > 0) {
        System.err.println("$failed task(s) did not succeed")
        exitProcess(1)
    }
    println("all tasks ended; every stream closed after its terminal event")
}

private fun text(s: String) = buildJsonObject { put("text", s) }

private fun print(agent: String, e: TaskEvent) {
    val data = if (e.dataJson == "{}") "" else " ${e.dataJson}"
    println("  [$agent …${e.taskId.takeLast(6)}] seq=${e.seq} ${e.kind}$data")
}

