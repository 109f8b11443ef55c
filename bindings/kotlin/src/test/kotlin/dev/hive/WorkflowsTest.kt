package dev.hive

import kotlinx.coroutines.flow.toList
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonPrimitive
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

class WorkflowsTest {
    @Test
    fun `a fork-join workflow joins its branches' outputs`() = test {
        withHive { hive ->
            val handle = hive.startWorker(ops, worker("wf") {
                system = true
                handler("fetch") { JsonPrimitive("data-" + input.jsonPrimitive.content) }
                // A join step's input: {"input": template, "parents": [{"step", "state", "output"}…]}.
                handler("merge") {
                    val parents = input.jsonObject["parents"] as JsonArray
                    JsonPrimitive(parents.joinToString("+") { it.jsonObject["output"]!!.jsonPrimitive.content })
                }
            })
            val spec = workflow("report") {
                step("a", "fetch", JsonPrimitive("a"))
                step("b", "fetch", JsonPrimitive("b"))
                step("merge", "merge") {
                    dependsOn("a", "b")
                    join = Join.LIST
                }
            }
            val submitted = hive.submitWorkflow(alice, spec)
            val events = hive.workflowEvents(alice, submitted.id).toList()
            events.forEachIndexed { i, e -> assertEquals((i + 1).toULong(), e.seq) }
            assertEquals(1, events.count { it.isTerminal })
            assertEquals("finished", events.last().kind)
            val view = hive.workflow(alice, submitted.id)
            assertEquals(WorkflowState.SUCCEEDED, events.last().workflowState, view.steps.joinToString { "${it.id}: ${it.state} ${it.error}" })
            assertEquals(WorkflowState.SUCCEEDED, view.state, view.steps.joinToString { "${it.id}: ${it.state} ${it.error}" })
            assertEquals(JsonPrimitive("data-a+data-b"), view.step("merge").output)
            assertEquals(listOf("a", "b"), view.step("merge").dependsOn)
            // Each step links to its task, whose stream follows the contract.
            for (step in view.steps) {
                assertEquals(StepState.SUCCEEDED, step.state)
                assertEquals(1, step.taskIds.size)
                hive.collectChecked(alice, step.taskIds.single())
            }
            handle.shutdown()
        }
    }

    @Test
    fun `a failed branch skips the join, and retries are per step`() = test {
        withHive { hive ->
            val handle = hive.startWorker(ops, worker("wf-fail") {
                system = true
                handler("ok") { JsonPrimitive(1) }
                handler("bad") { throw UnsupportedOperationException("no") }
            })
            val id = hive.submitWorkflow(alice, workflow("half") {
                step("good", "ok")
                step("broken", "bad") { retry { maxAttempts = 2; initialInterval = kotlin.time.Duration.parse("50ms") } }
                step("join", "ok") { dependsOn("good", "broken") }
            }).id
            val last = hive.workflowEvents(alice, id).toList().last()
            assertEquals(WorkflowState.FAILED, last.workflowState)
            val view = hive.workflow(alice, id)
            assertEquals(StepState.FAILED, view.step("broken").state)
            assertEquals("UnsupportedOperationException", view.step("broken").error?.code)
            assertEquals(StepState.SKIPPED, view.step("join").state)
            assertEquals("upstream_failed", view.step("join").skipReason)
            val brokenTask = hive.task(alice, view.step("broken").taskIds.last())
            assertEquals(2u, brokenTask.attempt)
            // Another tenant cannot see it.
            assertTrue(runCatching { hive.workflow(bob, id) }.exceptionOrNull() is HiveException.NotFound)
            handle.shutdown()
        }
    }
}
