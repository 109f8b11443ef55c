package dev.hive.smoke

import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import dev.hive.Hive
import dev.hive.Principals
import dev.hive.TaskState
import dev.hive.output
import dev.hive.worker
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.serialization.json.JsonPrimitive
import org.junit.Assert.assertEquals
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File
import kotlin.time.Duration.Companion.seconds

/**
 * Hive from the AAR on a device: the native library (this ABI's
 * libhive_kotlin.so) and JNA load, the sqlite:// backend works in the app's
 * files dir, a Kotlin handler runs a task to its end, and the task survives
 * closing and reopening the engine.
 */
@RunWith(AndroidJUnit4::class)
class SmokeTest {
    @Test
    fun runsATaskAndKeepsItAcrossReopen() = runBlocking<Unit> {
        val context = InstrumentationRegistry.getInstrumentation().targetContext
        for (name in listOf("hive.db", "hive.db-wal", "hive.db-shm")) File(context.filesDir, name).delete()
        val url = "sqlite://${context.filesDir}/hive.db"
        val alice = Principals.user("acme", "alice")

        val id = Hive.open(url).use { hive ->
            val w = worker("phone") {
                system = true
                handler("echo") { input }
            }
            val running = hive.startWorker(Principals.system(), w)
            val taskId = hive.submit(alice, "echo", JsonPrimitive("hi")).id
            val events = withTimeout(60.seconds) { hive.events(alice, taskId).toList() }
            assertEquals("succeeded", events.last().kind)
            running.shutdown()
            taskId
        }

        Hive.open(url).use { hive ->
            val task = hive.task(alice, id)
            assertEquals(TaskState.SUCCEEDED, task.state)
            assertEquals(JsonPrimitive("hi"), task.output)
        }
    }
}
