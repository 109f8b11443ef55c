package dev.hive

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds

val alice = Principals.user("acme", "alice")
val bob = Principals.user("globex", "bob")
val ops = Principals.system()

/** runBlocking with a deadline, so a hang fails the test instead of the build. */
fun test(timeout: Duration = 60.seconds, block: suspend CoroutineScope.() -> Unit) = runBlocking { withTimeout(timeout) { block() } }

/** Opens [url], runs [block], always closes. */
suspend fun withHive(url: String = "memory://", block: suspend (Hive) -> Unit) {
    val hive = Hive.open(url)
    try {
        block(hive)
    } finally {
        hive.close()
    }
}

/** Collects a task's stream to its end and checks the event contract on it. */
suspend fun Hive.collectChecked(principal: Principal, taskId: String): List<TaskEvent> {
    val events = events(principal, taskId).toList()
    assertTrue(events.isNotEmpty(), "task $taskId: empty stream")
    events.forEachIndexed { i, e -> assertEquals((i + 1).toULong(), e.seq, "task $taskId: seq gap at index $i") }
    assertEquals(1, events.count { it.isTerminal }, "task $taskId: terminal events in ${events.map { it.kind }}")
    assertTrue(events.last().isTerminal, "task $taskId: the last event is not terminal: ${events.last().kind}")
    return events
}
