// DSL builders for task specs, retry policies, timeouts and workflows.
package dev.hive

import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlin.time.toJavaDuration

/** Marks Hive's builder DSLs (no leaking of an outer builder's members). */
@DslMarker
annotation class HiveDsl

/** Builds a [RetryPolicy]. */
@HiveDsl
class RetryPolicyBuilder {
    /** At most this many attempts in all; `null` retries for ever. */
    var maxAttempts: Int? = 3

    /** Wait before the second attempt. */
    var initialInterval: Duration = 1.seconds

    /** Each wait is the previous one times this (≥ 1). */
    var backoffCoefficient: Double = 2.0

    /** Upper bound of one wait. */
    var maxInterval: Duration? = null

    /** Random spread of each wait, 0..1. */
    var jitter: Double = 0.0

    /** Error codes (or exception class names) that are never retried. */
    val nonRetryable: MutableList<String> = mutableListOf()

    internal fun build(): RetryPolicy {
        val attempts = maxAttempts
        require(attempts == null || attempts >= 1) { "maxAttempts must be at least 1 (or null for unlimited)" }
        return RetryPolicy(
            maxAttempts = attempts?.toUInt(),
            initialInterval = initialInterval.toJavaDuration(),
            backoffCoefficient = backoffCoefficient,
            maxInterval = maxInterval?.toJavaDuration(),
            jitter = jitter,
            nonRetryable = nonRetryable.toList(),
        )
    }
}

/** A retry policy: `retryPolicy { maxAttempts = 5; initialInterval = 200.milliseconds }`. */
fun retryPolicy(configure: RetryPolicyBuilder.() -> Unit): RetryPolicy = RetryPolicyBuilder().apply(configure).build()

/** Builds [Timeouts]. */
@HiveDsl
class TimeoutsBuilder {
    /** From submission (or the retry's due time) to start. */
    var scheduleToStart: Duration? = null

    /** One attempt, from start to its report. */
    var startToClose: Duration? = null

    /** Longest silence between heartbeats. */
    var heartbeat: Duration? = null

    /** The whole task, all attempts. */
    var deadline: Duration? = null

    internal fun build() = Timeouts(
        scheduleToStart?.toJavaDuration(),
        startToClose?.toJavaDuration(),
        heartbeat?.toJavaDuration(),
        deadline?.toJavaDuration(),
    )
}

/** Builds a [TaskSpec]. */
@HiveDsl
class TaskSpecBuilder(private val agent: String, private val input: JsonElement) {
    /** Higher runs first. */
    var priority: Int = 0

    /** Labels a node must carry. */
    val labels: MutableMap<String, String> = mutableMapOf()

    /** Resubmitting the same key returns the same task. */
    var idempotencyKey: String? = null

    /** Retries (`null`: the engine's default, 3 attempts, exponential). */
    var retry: RetryPolicy? = null

    /** Deadlines. */
    var timeouts: Timeouts? = null

    /** Not claimable before this long after submission (a delayed task). */
    var delay: Duration? = null

    /** Not claimable before this time (set this or [delay]). */
    var notBefore: java.time.Instant? = null

    /** At most `maxRunning` tasks of the tenant with the same key at once. */
    var concurrency: ConcurrencyLimit? = null

    /** How fast tasks of the tenant with the same key are claimed. */
    var rateLimit: RateLimit? = null

    /**
     * Sets [concurrency]: [key], or the value at the JSON pointer [keyFrom]
     * in the input; [maxRunning] slots; what happens when the key is full.
     */
    fun concurrency(
        key: String? = null,
        keyFrom: String? = null,
        maxRunning: Int = 1,
        strategy: ConcurrencyStrategy = ConcurrencyStrategy.QUEUE,
    ) {
        concurrency = ConcurrencyLimit(key, keyFrom, maxRunning.toUInt(), strategy)
    }

    /** Sets [rateLimit]: [limit] tokens per [per], [units] per task. */
    fun rateLimit(key: String? = null, keyFrom: String? = null, limit: Int, per: Duration, units: Int = 1) {
        rateLimit = RateLimit(key, keyFrom, limit.toUInt(), per.toJavaDuration(), units.toUInt())
    }

    /** Sets [retry]. */
    fun retry(configure: RetryPolicyBuilder.() -> Unit) {
        retry = retryPolicy(configure)
    }

    /** Sets [timeouts]. */
    fun timeouts(configure: TimeoutsBuilder.() -> Unit) {
        timeouts = TimeoutsBuilder().apply(configure).build()
    }

    internal fun build() = TaskSpec(
        agent, input.toString(), labels.toMap(), priority, timeouts, retry, idempotencyKey,
        delay?.toJavaDuration(), notBefore, concurrency, rateLimit,
    )
}

/** A task spec: `taskSpec("summarize", input) { priority = 5; retry { maxAttempts = 2 } }`. */
fun taskSpec(agent: String, input: JsonElement = JsonNull, configure: TaskSpecBuilder.() -> Unit = {}): TaskSpec =
    TaskSpecBuilder(agent, input).apply(configure).build()

/** When a step runs, given how its parents ended. */
enum class Trigger(internal val wire: String) {
    /** Every parent succeeded (the default). */
    ALL_SUCCEEDED("all_succeeded"),

    /** Every parent ended, however. */
    ALL_DONE("all_done"),

    /** At least one parent succeeded. */
    ANY_SUCCEEDED("any_succeeded"),

    /** Every parent failed (compensation). */
    ALL_FAILED("all_failed"),
}

/**
 * How a step's parents' results become its input, which is always
 * `{"input": template, "parents": …}`; each parent's result is
 * `{"state", "output"?, "error"?, "reason"?}`.
 */
enum class Join(internal val wire: String) {
    /** `parents` is an object: step id → result (the default). */
    COLLECT("collect"),

    /** `parents` is a list in `dependsOn` order: `[{"step": id, …result}]`. */
    LIST("list"),

    /** `parents` is the succeeded outputs' objects merged, plus `not_succeeded`. */
    MERGE("merge"),
}

/** Builds a [StepSpec]. */
@HiveDsl
class StepBuilder internal constructor(private val id: String, private val agent: String, private val input: JsonElement) {
    private val parents = mutableListOf<String>()

    /** When it runs. */
    var trigger: Trigger? = null

    /** How parents' outputs become its input. */
    var join: Join? = null

    /** Priority of its tasks. */
    var priority: Int = 0

    /** Labels a node must carry. */
    val labels: MutableMap<String, String> = mutableMapOf()

    /** Retries of its tasks. */
    var retry: RetryPolicy? = null

    /** Deadlines of its tasks. */
    var timeouts: Timeouts? = null

    /** Waits for these steps. */
    fun dependsOn(vararg steps: String) {
        parents += steps
    }

    /** Sets [retry]. */
    fun retry(configure: RetryPolicyBuilder.() -> Unit) {
        retry = retryPolicy(configure)
    }

    /** Sets [timeouts]. */
    fun timeouts(configure: TimeoutsBuilder.() -> Unit) {
        timeouts = TimeoutsBuilder().apply(configure).build()
    }

    internal fun build() = StepSpec(
        id, agent, input.toString(), parents.toList(), trigger?.wire, join?.wire,
        labels.toMap(), priority, retry, timeouts,
    )
}

/** Builds a [WorkflowSpec]. */
@HiveDsl
class WorkflowBuilder internal constructor(private val name: String) {
    private val steps = mutableListOf<StepSpec>()

    /** Resubmitting the same key returns the same workflow. */
    var idempotencyKey: String? = null

    /** Adds a step. */
    fun step(id: String, agent: String, input: JsonElement = JsonNull, configure: StepBuilder.() -> Unit = {}) {
        steps += StepBuilder(id, agent, input).apply(configure).build()
    }

    internal fun build() = WorkflowSpec(name, steps.toList(), idempotencyKey)
}

/**
 * A workflow:
 * ```
 * workflow("report") {
 *     step("fetch-a", "fetch")
 *     step("fetch-b", "fetch")
 *     step("merge", "merge") { dependsOn("fetch-a", "fetch-b"); join = Join.LIST }
 * }
 * ```
 */
fun workflow(name: String, configure: WorkflowBuilder.() -> Unit): WorkflowSpec = WorkflowBuilder(name).apply(configure).build()
