// The FFI's records, enums and exceptions under the names users import from
// `dev.hive`, with constructors and JSON accessors that read like Kotlin.
@file:Suppress("unused")

package dev.hive

import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.jsonObject

/** Who is calling: a tenant's user, operator or admin, or Hive's system principal. */
typealias Principal = dev.hive.ffi.Principal

/** A principal's role. */
typealias PrincipalKind = dev.hive.ffi.PrincipalKind

/** What to run: see [taskSpec] to build one. */
typealias TaskSpec = dev.hive.ffi.TaskSpec

/** How a failed attempt is retried: see [retryPolicy]. */
typealias RetryPolicy = dev.hive.ffi.RetryPolicy

/** Deadlines of a task (`null` fields keep the engine's defaults). */
typealias Timeouts = dev.hive.ffi.Timeouts

/** A concurrency limit per key (see [TaskSpecBuilder.concurrency]). */
typealias ConcurrencyLimit = dev.hive.ffi.ConcurrencyLimit

/** What a task does when its concurrency key is full. */
typealias ConcurrencyStrategy = dev.hive.ffi.ConcurrencyStrategy

/** A rate limit per key (see [TaskSpecBuilder.rateLimit]). */
typealias RateLimit = dev.hive.ffi.RateLimit

/** A task as stored. */
typealias Task = dev.hive.ffi.Task

/** A task's state. */
typealias TaskState = dev.hive.ffi.TaskState

/** Why an attempt or a task failed. */
typealias TaskError = dev.hive.ffi.TaskError

/** One event of a task's stream. */
typealias TaskEvent = dev.hive.ffi.TaskEvent

/** An event of the tenant's feed, with its cursor. */
typealias FeedEvent = dev.hive.ffi.FeedEvent

/** The answer to a submission. */
typealias Submitted = dev.hive.ffi.Submitted

/** One page of tasks. */
typealias TaskPage = dev.hive.ffi.TaskPage

/** Which tasks to list. */
typealias TaskQuery = dev.hive.ffi.TaskQuery

/** A workflow: see [workflow] to build one. */
typealias WorkflowSpec = dev.hive.ffi.WorkflowSpec

/** One step of a workflow. */
typealias StepSpec = dev.hive.ffi.StepSpec

/** The answer to a workflow submission. */
typealias WorkflowSubmitted = dev.hive.ffi.WorkflowSubmitted

/** A workflow with every step, as it stands. */
typealias WorkflowView = dev.hive.ffi.WorkflowView

/** A step of a workflow, as it stands. */
typealias StepView = dev.hive.ffi.StepView

/** A workflow's state. */
typealias WorkflowState = dev.hive.ffi.WorkflowState

/** A step's state. */
typealias StepState = dev.hive.ffi.StepState

/** One event of a workflow's stream. */
typealias WorkflowEvent = dev.hive.ffi.WorkflowEvent

/**
 * Every engine error: one subclass per kind, each with the engine's message
 * (which names the field, resource or id). Catch the ones you handle:
 * ```
 * try { hive.task(p, id) } catch (e: HiveException.NotFound) { … }
 * ```
 */
sealed class HiveException(message: String, cause: Throwable? = null) : Exception(message, cause) {
    /** No such task, workflow, node… — or it belongs to another tenant. */
    class NotFound(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** The principal may not do this. */
    class Forbidden(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** A spec is invalid; the message names the field. */
    class InvalidSpec(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** An argument is invalid (including one that is too large). */
    class InvalidArgument(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** The operation is not allowed in the task's state. */
    class InvalidTransition(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** The task has already ended. */
    class AlreadyTerminal(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** The attempt's lease was lost (cancelled, timed out, reassigned). */
    class LeaseLost(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** A concurrent change won. */
    class Conflict(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** A cursor points before what the store still keeps. */
    class OffsetExpired(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** The backend cannot be reached. */
    class BackendUnavailable(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** The backend failed. */
    class Backend(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** A wait timed out. */
    class Timeout(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** The engine (or the process's native runtime) is shut down. */
    class Shutdown(message: String, cause: Throwable? = null) : HiveException(message, cause)

    /** Anything else (a bug: please report it). */
    class Internal(message: String, cause: Throwable? = null) : HiveException(message, cause)
}

internal fun dev.hive.ffi.HiveException.toPublic(): HiveException {
    val m = message ?: ""
    return when (this) {
        is dev.hive.ffi.HiveException.NotFound -> HiveException.NotFound(m, this)
        is dev.hive.ffi.HiveException.Forbidden -> HiveException.Forbidden(m, this)
        is dev.hive.ffi.HiveException.InvalidSpec -> HiveException.InvalidSpec(m, this)
        is dev.hive.ffi.HiveException.InvalidArgument -> HiveException.InvalidArgument(m, this)
        is dev.hive.ffi.HiveException.InvalidTransition -> HiveException.InvalidTransition(m, this)
        is dev.hive.ffi.HiveException.AlreadyTerminal -> HiveException.AlreadyTerminal(m, this)
        is dev.hive.ffi.HiveException.LeaseLost -> HiveException.LeaseLost(m, this)
        is dev.hive.ffi.HiveException.Conflict -> HiveException.Conflict(m, this)
        is dev.hive.ffi.HiveException.OffsetExpired -> HiveException.OffsetExpired(m, this)
        is dev.hive.ffi.HiveException.BackendUnavailable -> HiveException.BackendUnavailable(m, this)
        is dev.hive.ffi.HiveException.Backend -> HiveException.Backend(m, this)
        is dev.hive.ffi.HiveException.Timeout -> HiveException.Timeout(m, this)
        is dev.hive.ffi.HiveException.Shutdown -> HiveException.Shutdown(m, this)
        is dev.hive.ffi.HiveException.Internal -> HiveException.Internal(m, this)
    }
}

/** Runs an FFI call, rethrowing its errors as [HiveException]. */
internal inline fun <T> ffi(block: () -> T): T =
    try {
        block()
    } catch (e: dev.hive.ffi.HiveException) {
        throw e.toPublic()
    }

/** Principals, by role. */
object Principals {
    /** A tenant's user: submits and reads its own tenant's work. */
    fun user(tenant: String, id: String, scopes: List<String> = emptyList()): Principal =
        Principal(tenant, id, PrincipalKind.USER, scopes)

    /** A tenant's operator: also cancels and operates nodes. */
    fun operator(tenant: String, id: String): Principal = Principal(tenant, id, PrincipalKind.OPERATOR, emptyList())

    /** A tenant's admin. */
    fun admin(tenant: String, id: String): Principal = Principal(tenant, id, PrincipalKind.ADMIN, emptyList())

    /** Hive itself: every tenant, system nodes. */
    fun system(): Principal = Principal("system", "system", PrincipalKind.SYSTEM, emptyList())
}

internal fun parseJson(text: String): JsonElement = Json.parseToJsonElement(text)

/** The task's input. */
val Task.input: JsonElement get() = parseJson(inputJson)

/** The task's output, once it succeeded. */
val Task.output: JsonElement? get() = outputJson?.let(::parseJson)

/** The event's fields (without `type`, which is [TaskEvent.kind]). */
val TaskEvent.data: JsonObject get() = parseJson(dataJson).jsonObject

/** The output of a `succeeded` event. */
val TaskEvent.output: JsonElement? get() = outputJson?.let(::parseJson)

/** The step's output, once it succeeded. */
val StepView.output: JsonElement? get() = outputJson?.let(::parseJson)

/** The step named [id]; `NoSuchElementException` if there is none. */
fun WorkflowView.step(id: String): StepView = steps.first { it.id == id }

/** The error's details, if any. */
val TaskError.details: JsonElement? get() = detailsJson?.let(::parseJson)

/** Whether the state is final. */
val TaskState.isTerminal: Boolean
    get() = this == TaskState.SUCCEEDED || this == TaskState.FAILED ||
        this == TaskState.CANCELLED || this == TaskState.TIMED_OUT
