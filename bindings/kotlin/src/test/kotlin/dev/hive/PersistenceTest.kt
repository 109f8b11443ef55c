package dev.hive

import kotlinx.coroutines.flow.toList
import kotlinx.serialization.json.JsonPrimitive
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir
import java.nio.file.Path

class PersistenceTest {
    @Test
    fun `SQLite state survives close and reopen`(@TempDir dir: Path) = test {
        val url = "sqlite://${dir.resolve("app-files/hive.db")}"
        dir.resolve("app-files").toFile().mkdirs()
        val done: String
        val waiting: String
        val eventsBefore: List<TaskEvent>
        Hive.open(url).use { hive ->
            val handle = hive.startWorker(ops, worker("phone") {
                system = true
                handler("note") { JsonPrimitive("saved: " + (input as JsonPrimitive).content) }
            })
            done = hive.submit(alice, "note", JsonPrimitive("groceries")).id
            eventsBefore = hive.collectChecked(alice, done)
            handle.shutdown()
            // Submitted while no worker runs: still pending at close.
            waiting = hive.submit(alice, "note", JsonPrimitive("later")) { idempotencyKey = "later-1" }.id
        }
        Hive.open(url).use { hive ->
            val task = hive.task(alice, done)
            assertEquals(TaskState.SUCCEEDED, task.state)
            assertEquals(JsonPrimitive("saved: groceries"), task.output)
            assertEquals(eventsBefore, hive.events(alice, done).toList())
            assertEquals(TaskState.PENDING, hive.task(alice, waiting).state)
            // The idempotency key is durable too.
            val again = hive.submit(alice, "note", JsonPrimitive("later")) { idempotencyKey = "later-1" }
            assertEquals(waiting, again.id)
            assertTrue(!again.created)
            // And the pending task runs once a worker starts.
            val handle = hive.startWorker(ops, worker("phone-2") {
                system = true
                handler("note") { JsonPrimitive("done") }
            })
            assertEquals(TaskState.SUCCEEDED, hive.await(alice, waiting).state)
            handle.shutdown()
        }
    }
}
