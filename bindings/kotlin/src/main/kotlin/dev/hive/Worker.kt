package dev.hive

import dev.hive.ffi.HandlerFailure
import dev.hive.ffi.Attempt
import dev.hive.ffi.AttemptBoard
import dev.hive.ffi.AttemptResult
import dev.hive.ffi.AttemptSink
import dev.hive.ffi.WorkerOptions
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineName
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.launch
import java.util.concurrent.ConcurrentHashMap
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlin.time.Duration
import kotlin.time.toJavaDuration

/** A handler: runs one attempt of a task and returns its output. */
typealias Handler = suspend HandlerScope.() -> JsonElement

/**
 * Fails the attempt with a stable [code]. Retried per the task's policy
 * unless [nonRetryable]; [retryAfter] asks for a later retry.
 */
class TaskFailure(
    val code: String,
    message: String,
    val nonRetryable: Boolean = false,
    val retryAfter: Duration? = null,
    val details: JsonElement? = null,
) : Exception(message)

/** What a handler sees: the task, and ways to log and heartbeat. */
class HandlerScope internal constructor(private val board: AttemptBoard, private val job: Attempt) {
    /** The task's id. */
    val taskId: String get() = job.taskId

    /** The attempt, from 1. */
    val attempt: Int get() = job.attempt.toInt()

    /** The agent the task is for. */
    val agent: String get() = job.agent

    /** The tenant that owns the task. */
    val tenant: String get() = job.tenant

    /** The principal that submitted the task. */
    val owner: String get() = job.owner

    /** The task's input. */
    val input: JsonElement by lazy { parseJson(job.inputJson) }

    /** Whether the attempt should stop (its coroutine is cancelled anyway when the task is). */
    val isCancelled: Boolean get() = board.isCancelled(job.id)

    /** Appends [line] to the task's events (a `log` event on [stream]). */
    suspend fun log(line: String, stream: String = "stdout") = ffi { board.log(job.id, stream, line) }

    /** Sets the progress sent with the next heartbeat. */
    fun setProgress(progress: JsonElement) = ffi { board.setProgress(job.id, progress.toString()) }

    /** Heartbeats now, with optional [progress]; [HiveException.LeaseLost] if the attempt should stop. */
    suspend fun heartbeat(progress: JsonElement? = null) = ffi { board.heartbeat(job.id, progress?.toString()) }
}

/**
 * A worker node's configuration and handlers:
 * ```
 * val worker = worker("node-1") {
 *     capacity = 8
 *     handler("summarize") { buildJsonObject { put("summary", input.toString().take(40)) } }
 * }
 * ```
 */
@HiveDsl
class Worker(val name: String) {
    /** Attempts run at once. */
    var capacity: Int = 16

    /** Leases claimed per round trip (default: the capacity). */
    var claimBatch: Int? = null

    /** The node's labels. */
    val labels: MutableMap<String, String> = mutableMapOf()

    /** A system node (runs every tenant's tasks; start it as [Principals.system]). */
    var system: Boolean = false

    /** How often running attempts heartbeat. */
    var heartbeatInterval: Duration? = null

    /** On shutdown, how long in-flight handlers may take to finish. */
    var shutdownGrace: Duration? = null

    internal val handlers: MutableMap<String, Handler> = linkedMapOf()

    /** Runs tasks for [agent] with [handler]. */
    fun handler(agent: String, handler: Handler) {
        require(agent.isNotBlank()) { "a handler's agent name must not be blank" }
        handlers[agent] = handler
    }

    internal fun options(): WorkerOptions {
        require(capacity >= 1) { "capacity must be at least 1" }
        return WorkerOptions(
            name = name,
            capacity = capacity.toUInt(),
            claimBatch = claimBatch?.toUInt(),
            labels = labels.toMap(),
            system = system,
            heartbeatInterval = heartbeatInterval?.toJavaDuration(),
            shutdownGrace = shutdownGrace?.toJavaDuration(),
        )
    }


}

/** A worker: `worker("node") { handler("agent") { … } }`. */
fun worker(name: String, configure: Worker.() -> Unit): Worker = Worker(name).apply(configure)

/** A running worker. */
class WorkerHandle internal constructor(private val handle: dev.hive.ffi.WorkerHandle, private val dispatcher: Dispatcher) {
    /** The id of its node. */
    val nodeId: String get() = handle.nodeId()

    /** Whether it is still claiming and running tasks. */
    val isRunning: Boolean get() = handle.isRunning()

    /** Stops claiming, lets in-flight handlers finish (up to the grace period), removes the node. */
    suspend fun shutdown() {
        ffi { handle.shutdown() }
        release()
    }

    /** Stops at once: in-flight handlers are cancelled and their tasks go back to the queue. */
    suspend fun shutdownNow() {
        ffi { handle.shutdownNow() }
        release()
    }

    private fun release() {
        dispatcher.close()
        handle.close()
    }
}

/**
 * The Kotlin side of a worker: the engine hands it jobs in batches; each runs
 * in its own coroutine, and answers go back in batches too. A [TaskFailure]
 * becomes the attempt's error as is; any other exception fails the attempt
 * with its class name as the code; a cancelled attempt cancels its coroutine.
 */
internal class Dispatcher(private val handlers: Map<String, Handler>, val board: AttemptBoard) : AttemptSink {
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default + CoroutineName("hive-handlers"))
    private val running = ConcurrentHashMap<Long, kotlinx.coroutines.Job>()
    private val answers = Channel<AttemptResult>(Channel.UNLIMITED)

    init {
        scope.launch {
            val batch = ArrayList<AttemptResult>(BATCH)
            for (first in answers) {
                batch += first
                while (batch.size < BATCH) batch += answers.tryReceive().getOrNull() ?: break
                board.complete(batch.toList())
                batch.clear()
            }
        }
    }

    override fun run(jobs: List<Attempt>) {
        // Called on an engine thread: never throws, never blocks.
        for (job in jobs) {
            val id = job.id.toLong()
            val coroutine = scope.launch(start = CoroutineStart.LAZY) {
                val result = try {
                    val handler = handlers[job.agent]
                        ?: throw TaskFailure("no_handler", "no handler for agent ${job.agent}", nonRetryable = true)
                    AttemptResult(job.id, HandlerScope(board, job).handler().toString(), null)
                } catch (e: CancellationException) {
                    throw e
                } catch (e: TaskFailure) {
                    AttemptResult(job.id, null, HandlerFailure(
                        e.code, e.message ?: e.code, e.nonRetryable,
                        e.retryAfter?.inWholeMilliseconds?.coerceAtLeast(0)?.toULong(), e.details?.toString(),
                    ))
                } catch (e: Throwable) {
                    AttemptResult(job.id, null, HandlerFailure(e::class.simpleName ?: "Throwable", e.message ?: e.toString(), false, null, null))
                } finally {
                    running.remove(id)
                }
                answers.trySend(result)
            }
            running[id] = coroutine
            coroutine.start()
        }
    }

    override fun cancel(jobIds: List<ULong>) {
        for (id in jobIds) running[id.toLong()]?.cancel()
    }

    /** Cancels what still runs (the worker has stopped). Idempotent. */
    fun close() {
        answers.close()
        scope.cancel()
    }

    private companion object {
        const val BATCH = 512
    }
}

/** An output-less handler's result. */
val NoOutput: JsonElement = JsonNull
