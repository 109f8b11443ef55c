package dev.hive

import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.buildJsonObject
import kotlinx.serialization.json.int
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.put
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource

class TasksTest {
    @Test
    fun `every stream ends with exactly one terminal event`() = test {
        withHive { hive ->
            val w = worker("streams") {
                system = true
                handler("echo") {
                    log("echoing")
                    input
                }
                handler("boom") { throw TaskFailure("boom", "always fails", nonRetryable = true) }
            }
            val handle = hive.startWorker(ops, w)
            val ids = (1..20).map { i ->
                hive.submit(alice, if (i % 4 == 0) "boom" else "echo", JsonPrimitive(i)).id
            }
            val streams = coroutineScope { ids.map { id -> async { hive.collectChecked(alice, id) } }.awaitAll() }
            for ((i, events) in streams.withIndex()) {
                val n = i + 1
                val last = events.last()
                if (n % 4 == 0) {
                    assertEquals("failed", last.kind)
                    assertEquals("boom", last.error?.code)
                } else {
                    assertEquals("succeeded", last.kind)
                    assertEquals(JsonPrimitive(n), last.output)
                    assertTrue(events.any { it.kind == "log" && it.data["line"]?.jsonPrimitive?.content == "echoing" })
                }
            }
            // A stream opened after the end replays and ends too.
            val replay = hive.collectChecked(alice, ids.first())
            assertEquals(streams.first().map { it.seq }, replay.map { it.seq })
            handle.shutdown()
        }
    }

    @Test
    fun `a failing Kotlin handler is retried with backoff and then succeeds`() = test {
        withHive { hive ->
            val calls = AtomicInteger()
            val startedAt = mutableListOf<TimeSource.Monotonic.ValueTimeMark>()
            val handle = hive.startWorker(ops, worker("retry") {
                system = true
                handler("flaky") {
                    synchronized(startedAt) { startedAt += TimeSource.Monotonic.markNow() }
                    if (calls.incrementAndGet() < 3) throw IllegalStateException("not yet ($attempt)")
                    buildJsonObject { put("attempt", attempt) }
                }
            })
            val id = hive.submit(alice, "flaky") {
                retry { maxAttempts = 3; initialInterval = 150.milliseconds; backoffCoefficient = 2.0 }
            }.id
            val events = hive.collectChecked(alice, id)
            val failures = events.filter { it.kind == "attempt_failed" }
            assertEquals(2, failures.size)
            // The exception's class name is the code; its message is kept.
            assertEquals("IllegalStateException", failures[0].error?.code)
            assertEquals("not yet (1)", failures[0].error?.message)
            assertEquals("succeeded", events.last().kind)
            assertEquals(3, events.last().output!!.jsonObject["attempt"]!!.jsonPrimitive.int)
            val task = hive.task(alice, id)
            assertEquals(TaskState.SUCCEEDED, task.state)
            assertEquals(3u, task.attempt)
            // Backoff: about 150 ms, then about 300 ms, between attempts.
            val gap1 = startedAt[1] - startedAt[0]
            val gap2 = startedAt[2] - startedAt[1]
            assertTrue(gap1 >= 140.milliseconds, "first backoff $gap1")
            assertTrue(gap2 >= 280.milliseconds, "second backoff $gap2")
            handle.shutdown()
        }
    }

    @Test
    fun `a non-retryable failure ends the task at once`() = test {
        withHive { hive ->
            val handle = hive.startWorker(ops, worker("fail") {
                system = true
                handler("reject") { throw TaskFailure("bad_request", "no", nonRetryable = true, details = JsonPrimitive("why")) }
            })
            val id = hive.submit(alice, "reject") { retry { maxAttempts = 5 } }.id
            val task = hive.await(alice, id, 20.seconds)
            assertEquals(TaskState.FAILED, task.state)
            assertEquals(1u, task.attempt)
            assertEquals("bad_request", task.error?.code)
            assertTrue(task.error!!.nonRetryable)
            assertEquals(JsonPrimitive("why"), task.error!!.details)
            handle.shutdown()
        }
    }

    @Test
    fun `cancelling a task cancels its handler's coroutine`() = test {
        withHive { hive ->
            val started = CompletableDeferred<Unit>()
            val cancelled = CompletableDeferred<Unit>()
            val handle = hive.startWorker(ops, worker("cancel") {
                system = true
                handler("sleep") {
                    started.complete(Unit)
                    try {
                        delay(60.seconds)
                        NoOutput
                    } catch (e: kotlinx.coroutines.CancellationException) {
                        cancelled.complete(Unit)
                        throw e
                    }
                }
            })
            val id = hive.submit(alice, "sleep").id
            started.await()
            hive.cancel(Principals.operator("acme", "ops"), id, "changed my mind")
            cancelled.await()
            val events = hive.collectChecked(alice, id)
            assertEquals("cancelled", events.last().kind)
            assertEquals(TaskState.CANCELLED, hive.task(alice, id).state)
            // Cancelling again: the task has ended.
            val again = runCatching { hive.cancel(Principals.operator("acme", "ops"), id) }
            assertTrue(again.exceptionOrNull() is HiveException.AlreadyTerminal, "got $again")
            handle.shutdown()
        }
    }

    @Test
    fun `cancelling the collecting coroutine ends the subscription`() = test {
        withHive { hive ->
            val release = CompletableDeferred<Unit>()
            val handle = hive.startWorker(ops, worker("slow") {
                system = true
                handler("wait") {
                    log("waiting")
                    release.await()
                    NoOutput
                }
            })
            val id = hive.submit(alice, "wait").id
            val seen = mutableListOf<TaskEvent>()
            val collector = launch { hive.events(alice, id).collect { seen += it } }
            // The feed never ends by itself: take() cancels its collection.
            val firstFeed = hive.feed(alice).take(2).toList()
            assertEquals(2, firstFeed.size)
            while (seen.none { it.kind == "log" }) delay(10)
            collector.cancel()
            collector.join()
            assertTrue(collector.isCancelled)
            assertTrue(seen.none { it.isTerminal })
            release.complete(Unit)
            // A new subscription still works and sees the end.
            val last = hive.events(alice, id, afterSeq = seen.last().seq.toLong()).toList().last()
            assertEquals("succeeded", last.kind)
            // And a first-event collection cancels the rest of the flow.
            assertEquals(1uL, hive.events(alice, id).first().seq)
            handle.shutdown()
        }
    }

    @Test
    fun `bad input gets typed exceptions and stores nothing`() = test {
        withHive { hive ->
            suspend fun expect(what: String, check: (Throwable) -> Boolean, block: suspend () -> Unit) {
                val e = runCatching { block() }.exceptionOrNull()
                assertNotNull(e, "$what: no exception")
                assertTrue(check(e!!), "$what: got ${e::class.qualifiedName}: ${e.message}")
            }
            expect("blank agent", { it is HiveException.InvalidSpec }) { hive.submit(alice, "  ") }
            expect("input not JSON", { it is HiveException.InvalidSpec && "input" in it.message!! }) {
                hive.submit(alice, TaskSpec("echo", "{not json", emptyMap(), 0, null, null, null))
            }
            expect("bad task id", { it is HiveException.InvalidArgument }) { hive.task(alice, "not-a-task-id") }
            expect("unknown task", { it is HiveException.NotFound }) { hive.task(alice, "00000000-0000-7000-8000-000000000000") }
            expect("empty tenant", { it is HiveException.InvalidArgument || it is HiveException.InvalidSpec }) {
                hive.submit(Principals.user("", "x"), "echo")
            }
            expect("unknown scope", { it is HiveException.InvalidSpec && "scopes" in it.message!! }) {
                hive.submit(Principals.user("acme", "alice", listOf("task:fly")), "echo")
            }
            expect("zero attempts", { it is IllegalArgumentException }) {
                hive.submit(alice, "echo") { retry { maxAttempts = 0 } }
            }
            expect("negative backoff", { it is HiveException.InvalidSpec }) {
                hive.submit(alice, "echo") { retry { backoffCoefficient = -1.0 } }
            }
            expect("workflow cycle", { it is HiveException.InvalidSpec }) {
                hive.submitWorkflow(alice, workflow("loop") {
                    step("a", "echo") { dependsOn("b") }
                    step("b", "echo") { dependsOn("a") }
                })
            }
            expect("worker without handlers", { it is IllegalArgumentException }) { hive.startWorker(ops, worker("empty") {}) }
            expect("unknown backend", { it is HiveException }) { Hive.open("bogus://nowhere") }
            expect("negative afterSeq", { it is IllegalArgumentException }) {
                hive.events(alice, "00000000-0000-7000-8000-000000000000", afterSeq = -1).toList()
            }
            expect("zero limit", { it is IllegalArgumentException }) { hive.tasks(alice, limit = 0) }
            // Nothing was stored by any of it.
            assertEquals(0, hive.tasks(alice).items.size)
        }
    }

    @Test
    fun `closing Hive cancels the handlers still running`() = test {
        val started = CompletableDeferred<Unit>()
        val cancelled = CompletableDeferred<Unit>()
        val hive = Hive.open()
        hive.startWorker(ops, worker("closing") {
            system = true
            handler("sleep") {
                started.complete(Unit)
                try {
                    delay(60.seconds)
                    NoOutput
                } finally {
                    cancelled.complete(Unit)
                }
            }
        })
        hive.submit(alice, "sleep")
        started.await()
        hive.close()
        cancelled.await()
        hive.close() // idempotent
        val after = runCatching { hive.tasks(alice) }.exceptionOrNull()
        assertTrue(after is HiveException.Shutdown, "after close: $after")
    }

    @Test
    fun `another tenant's task is NotFound`() = test {
        withHive { hive ->
            val id = hive.submit(alice, "echo", JsonPrimitive("secret")).id
            for (attempt in listOf<suspend () -> Unit>(
                { hive.task(bob, id) },
                { hive.cancel(Principals.operator("globex", "ops"), id) },
                { hive.events(bob, id).toList() },
            )) {
                val e = runCatching { attempt() }.exceptionOrNull()
                assertTrue(e is HiveException.NotFound, "got $e")
            }
            assertEquals(0, hive.tasks(bob).items.size)
            assertEquals(1, hive.tasks(alice).items.size)
            assertFalse(hive.task(alice, id).isTerminal)
        }
    }

    @Test
    fun `1000 Kotlin handlers run at once`() = test(120.seconds) {
        withHive { hive ->
            val n = 1000
            val inside = AtomicInteger()
            val all = CompletableDeferred<Unit>()
            val peak = AtomicInteger()
            val handle = hive.startWorker(ops, worker("wide") {
                system = true
                capacity = n
                handler("gather") {
                    val now = inside.incrementAndGet()
                    peak.accumulateAndGet(now) { a, b -> maxOf(a, b) }
                    if (now == n) all.complete(Unit)
                    all.await() // nobody finishes until all 1000 are in
                    JsonPrimitive(now)
                }
            })
            val specs = (1..n).map { taskSpec("gather") }
            val ids = specs.chunked(250).flatMap { hive.submitAll(alice, it) }.map { it.id }
            all.await()
            assertEquals(n, peak.get())
            val states = ids.map { hive.await(alice, it, 60.seconds).state }
            assertTrue(states.all { it == TaskState.SUCCEEDED }, "states: ${states.groupingBy { it }.eachCount()}")
            handle.shutdown()
        }
    }

    @Test
    fun `a listed page has a cursor to the next one`() = test {
        withHive { hive ->
            hive.submitAll(alice, (1..5).map { taskSpec("echo", JsonPrimitive(it)) })
            val first = hive.tasks(alice, limit = 3)
            assertEquals(3, first.items.size)
            assertNotNull(first.next)
            val second = hive.tasks(alice, after = first.next, limit = 3)
            assertEquals(2, second.items.size)
            assertNull(second.next)
            assertTrue(hive.tasks(alice, states = listOf(TaskState.SUCCEEDED)).items.isEmpty())
        }
    }

    @Test
    fun `a delayed task waits for its time`() = test {
        withHive { hive ->
            val handle = hive.startWorker(ops, worker("delayed") {
                system = true
                handler("echo") { input }
            })
            val t0 = java.time.Instant.now()
            val byDelay = hive.submit(alice, "echo", JsonPrimitive(1)) { delay = 600.milliseconds }.id
            val byTime = hive.submit(alice, "echo", JsonPrimitive(2)) { notBefore = t0.plusMillis(600) }.id
            val waiting = hive.task(alice, byTime)
            assertEquals(TaskState.PENDING, waiting.state)
            assertEquals(t0.plusMillis(600).toEpochMilli(), waiting.availableAt.toEpochMilli())
            for (id in listOf(byDelay, byTime)) {
                val events = hive.collectChecked(alice, id)
                assertEquals("succeeded", events.last().kind)
                val started = events.first { it.kind == "started" }.at
                assertTrue(started.toEpochMilli() >= t0.toEpochMilli() + 590, "started before its time")
            }
            val e = runCatching {
                hive.submit(alice, "echo") { delay = 1.seconds; notBefore = t0 }
            }.exceptionOrNull()
            assertTrue(e is HiveException.InvalidSpec && "delay" in e.message!!, "got $e")
            handle.shutdown()
        }
    }

    @Test
    fun `concurrency keys hold one slot and rate limits space claims`() = test {
        withHive { hive ->
            val running = java.util.concurrent.atomic.AtomicInteger()
            val most = java.util.concurrent.atomic.AtomicInteger()
            val handle = hive.startWorker(ops, worker("limited") {
                system = true
                capacity = 8
                handler("slow") {
                    most.accumulateAndGet(running.incrementAndGet(), ::maxOf)
                    kotlinx.coroutines.delay(30)
                    running.decrementAndGet()
                    input
                }
            })
            val ids = (1..5).map { i ->
                hive.submit(alice, "slow", buildJsonObject { put("customer", "c1"); put("i", i) }) {
                    concurrency(keyFrom = "/customer", maxRunning = 1)
                }.id
            }
            for (id in ids) assertEquals("succeeded", hive.collectChecked(alice, id).last().kind)
            assertEquals(1, most.get(), "one slot for the key")
            val t0 = System.nanoTime()
            val limited = (1..3).map { i ->
                hive.submit(alice, "slow", JsonPrimitive(i)) { rateLimit(key = "llm", limit = 1, per = 200.milliseconds) }.id
            }
            for (id in limited) assertEquals("succeeded", hive.collectChecked(alice, id).last().kind)
            assertTrue(System.nanoTime() - t0 >= 390_000_000, "three tasks at 1 per 200 ms take 400 ms")
            val e = runCatching {
                hive.submit(alice, "slow") { concurrency(key = "k", maxRunning = 0) }
            }.exceptionOrNull()
            assertTrue(e is HiveException.InvalidSpec && "concurrency.max_running" in e.message!!, "got $e")
            handle.shutdown()
        }
    }
}
