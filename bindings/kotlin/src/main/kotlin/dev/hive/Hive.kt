package dev.hive

import dev.hive.ffi.HiveEngine
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlin.time.Duration
import kotlin.time.toJavaDuration

/**
 * An embedded Hive engine. Open it on a backend chosen by URL — `memory://`,
 * `sqlite://PATH` (on Android, a file in `context.filesDir`), `postgres://…`,
 * `redis://…` — and close it when done:
 *
 * ```
 * Hive.open("sqlite://${filesDir}/hive.db").use { hive ->
 *     val submitted = hive.submit(alice, taskSpec("summarize", input))
 *     hive.events(alice, submitted.id).collect { println(it.kind) }
 * }
 * ```
 *
 * Every call is a `suspend` function; a cancelled coroutine cancels the call.
 * Errors are [HiveException] subclasses (a sealed class).
 */
class Hive private constructor(private val ffiEngine: HiveEngine) : AutoCloseable {
    private val closed = java.util.concurrent.atomic.AtomicBoolean(false)

    /** The engine, or [HiveException.Shutdown] once closed. */
    private val engine: HiveEngine
        get() = if (closed.get()) throw HiveException.Shutdown("this Hive ($url) was closed") else ffiEngine

    /** The Kotlin sides of the workers started here, cancelled by [close]. */
    private val dispatchers = java.util.concurrent.ConcurrentLinkedQueue<Dispatcher>()

    companion object {
        /** Opens the backend [url] names and starts an engine on it. */
        suspend fun open(url: String = "memory://"): Hive {
            NativeLifecycle.install()
            return Hive(ffi { HiveEngine.open(url) })
        }

        /** The version of the engine in the native library. */
        fun version(): String = dev.hive.ffi.hiveVersion()
    }

    /** The URL it was opened with. */
    val url: String = ffiEngine.url()

    /** Submits a task. */
    suspend fun submit(principal: Principal, spec: TaskSpec): Submitted = ffi { engine.submit(principal, spec) }

    /** Submits a task for [agent] with [input], configured by [configure]. */
    suspend fun submit(
        principal: Principal,
        agent: String,
        input: JsonElement = JsonNull,
        configure: TaskSpecBuilder.() -> Unit = {},
    ): Submitted = ffi { engine.submit(principal, taskSpec(agent, input, configure)) }

    /** Submits many tasks in one round trip, in order. */
    suspend fun submitAll(principal: Principal, specs: List<TaskSpec>): List<Submitted> = ffi { engine.submitBatch(principal, specs) }

    /** A task; another tenant's is [HiveException.NotFound]. */
    suspend fun task(principal: Principal, taskId: String): Task = ffi { engine.getTask(principal, taskId) }

    /** One page of the caller's tenant's tasks. */
    suspend fun tasks(
        principal: Principal,
        states: List<TaskState> = emptyList(),
        agent: String? = null,
        after: String? = null,
        limit: Int? = null,
    ): TaskPage {
        require(limit == null || limit >= 1) { "limit must be at least 1 (got $limit)" }
        return ffi { engine.listTasks(principal, TaskQuery(states, agent, null, after, limit?.toUInt())) }
    }

    /** Cancels a task that has not ended; its handler's coroutine is cancelled. */
    suspend fun cancel(principal: Principal, taskId: String, reason: String = "cancelled") =
        ffi { engine.cancel(principal, taskId, reason) }

    /** Waits until the task ends and returns it; with [timeout], gives up with [HiveException.Timeout]. */
    suspend fun await(principal: Principal, taskId: String, timeout: Duration? = null): Task =
        ffi { engine.wait(principal, taskId, timeout?.toJavaDuration()) }

    /**
     * The task's events after [afterSeq] (0: from the start), then live ones.
     * The flow completes right after the one terminal event; cancelling the
     * collector ends the subscription.
     */
    fun events(principal: Principal, taskId: String, afterSeq: Long = 0): Flow<TaskEvent> = flow {
        require(afterSeq >= 0) { "afterSeq must not be negative (got $afterSeq)" }
        val stream = ffi { engine.events(principal, taskId, afterSeq.toULong()) }
        try {
            while (true) {
                val batch = ffi { stream.nextBatch(BATCH) }
                if (batch.isEmpty()) break
                for (event in batch) emit(event)
            }
        } finally {
            stream.stop()
            stream.close()
        }
    }

    /**
     * The workflow's events after [afterSeq], then live ones; completes right
     * after its `finished` event.
     */
    fun workflowEvents(principal: Principal, workflowId: String, afterSeq: Long = 0): Flow<WorkflowEvent> = flow {
        require(afterSeq >= 0) { "afterSeq must not be negative (got $afterSeq)" }
        val stream = ffi { engine.workflowEvents(principal, workflowId, afterSeq.toULong()) }
        try {
            while (true) {
                val event = ffi { stream.next() } ?: break
                emit(event)
            }
        } finally {
            stream.stop()
            stream.close()
        }
    }

    /**
     * Every task event of the caller's tenant after [cursor] (only terminal
     * ones with [terminalOnly]), then live. Never completes by itself:
     * cancel the collector (or `take(n)`).
     */
    fun feed(principal: Principal, cursor: Long = 0, terminalOnly: Boolean = false): Flow<FeedEvent> = flow {
        require(cursor >= 0) { "cursor must not be negative (got $cursor)" }
        val stream = ffi { engine.feed(principal, cursor.toULong(), terminalOnly) }
        try {
            while (true) {
                val batch = ffi { stream.nextBatch(FEED_BATCH) }
                if (batch.isEmpty()) break
                for (event in batch) emit(event)
            }
        } finally {
            stream.stop()
            stream.close()
        }
    }

    /** Submits a workflow (see [workflow]). */
    suspend fun submitWorkflow(principal: Principal, spec: WorkflowSpec): WorkflowSubmitted = ffi { engine.submitWorkflow(principal, spec) }

    /** A workflow with every step; another tenant's is [HiveException.NotFound]. */
    suspend fun workflow(principal: Principal, workflowId: String): WorkflowView = ffi { engine.getWorkflow(principal, workflowId) }

    /** Cancels a running workflow and its running tasks. */
    suspend fun cancelWorkflow(principal: Principal, workflowId: String, reason: String = "cancelled") =
        ffi { engine.cancelWorkflow(principal, workflowId, reason) }

    /** Registers [worker]'s node and starts running its handlers' tasks. */
    suspend fun startWorker(principal: Principal, worker: Worker): WorkerHandle {
        require(worker.handlers.isNotEmpty()) { "worker ${worker.name} has no handlers: add one with handler(\"agent\") { … }" }
        val board = dev.hive.ffi.AttemptBoard()
        val dispatcher = Dispatcher(worker.handlers.toMap(), board)
        val handle = try {
            ffi { engine.startWorker(principal, worker.options(), worker.handlers.keys.toList(), board, dispatcher) }
        } catch (e: Throwable) {
            dispatcher.close()
            throw e
        }
        dispatchers += dispatcher
        return WorkerHandle(handle, dispatcher)
    }

    /**
     * Stops the engine and frees it: workers stop claiming, handlers still
     * running are cancelled (their tasks go back to the queue when their
     * leases expire); stored state stays. Idempotent. For a graceful stop,
     * `shutdown()` the workers first.
     */
    override fun close() {
        if (!closed.compareAndSet(false, true)) return
        ffiEngine.shutdown()
        while (true) dispatchers.poll()?.close() ?: break
        ffiEngine.close()
    }
}

private const val BATCH: UInt = 256u
private const val FEED_BATCH: UInt = 4096u
