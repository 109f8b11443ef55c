// End-to-end throughput of the Kotlin binding with Kotlin handlers, and the
// same workload with a Rust handler in the same library and process, for the
// ratio. N no-op tasks are submitted in batches while in-process workers run
// them; a tenant-feed collector counts terminal events. e2e_per_s is N over
// the time from the first submit until every terminal event was seen (as in
// hive-bench and examples/python/bench.py).
//
// Run: bindings/kotlin/scripts/test runs it with HIVE_KT_BENCH_TASKS tasks.
// By hand: java -cp "$(cat bindings/kotlin/target/classpath.txt)" \
//   -Djna.library.path=target/release dev.hive.examples.BenchKt --tasks 100000
// Prints one line:
//   hive-bench lang=kotlin backend=memory e2e_per_s=… tasks=N workers=K submit_per_s=… rust_e2e_per_s=… ratio=…
package dev.hive.examples

import dev.hive.Hive
import dev.hive.NoOutput
import dev.hive.Principals
import dev.hive.taskSpec
import dev.hive.worker
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.takeWhile
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlin.system.exitProcess

private data class Result(val e2ePerS: Double, val submitPerS: Double)

private suspend fun runKotlin(url: String, tasks: Int, workers: Int, capacity: Int, batch: Int): Result {
    Hive.open(url).use { hive ->
        val ops = Principals.system()
        val tenant = Principals.user("bench", "bench")
        val w = worker("bench") {
            this.capacity = capacity
            claimBatch = 512
            system = true
            handler("noop") { NoOutput }
        }
        val handles = (1..workers).map { hive.startWorker(ops, w) }
        val start = System.nanoTime()
        var submittedAt = 0L
        var seen = 0
        var failed = 0
        kotlinx.coroutines.coroutineScope {
            launch(Dispatchers.Default) {
                var left = tasks
                val spec = taskSpec("noop")
                while (left > 0) {
                    val n = minOf(batch, left)
                    hive.submitAll(tenant, List(n) { spec })
                    left -= n
                }
                submittedAt = System.nanoTime()
            }
            hive.feed(tenant, terminalOnly = true).takeWhile { e ->
                seen++
                if (e.event.kind != "succeeded") failed++
                seen < tasks
            }.collect {}
        }
        val end = System.nanoTime()
        handles.forEach { it.shutdown() }
        check(failed == 0) { "$failed benchmark tasks did not succeed" }
        return Result(tasks / ((end - start) / 1e9), tasks / ((submittedAt - start) / 1e9))
    }
}

fun main(args: Array<String>) {
    fun arg(name: String, default: String) = args.toList().let { a -> a.indexOf("--$name").takeIf { it >= 0 }?.let { a[it + 1] } ?: default }
    val url = arg("url", "memory://")
    val tasks = arg("tasks", "100000").toInt()
    val workers = arg("workers", "2").toInt()
    val capacity = arg("capacity", "1024").toInt()
    val batch = arg("batch", "1000").toInt()
    val runs = arg("runs", "1").toInt()
    if (tasks < 1 || workers < 1 || capacity < 1 || batch < 1 || runs < 1) {
        System.err.println("bench: --tasks, --workers, --capacity, --batch and --runs must be at least 1")
        exitProcess(2)
    }
    val backend = url.substringBefore("://")
    runBlocking {
        // A short warm-up (JIT, allocator), then the best of `runs`.
        runKotlin(url, minOf(tasks, 5_000), workers, capacity, batch)
        val kotlin = (1..runs).map { runKotlin(url, tasks, workers, capacity, batch) }.maxBy { it.e2ePerS }
        val rust = (1..runs).map {
            dev.hive.ffi.benchRustHandlers(url, tasks.toUInt(), workers.toUInt(), capacity.toUInt(), batch.toUInt())
        }.maxBy { it.e2ePerS }
        println(
            "hive-bench lang=kotlin backend=$backend e2e_per_s=${"%.0f".format(kotlin.e2ePerS)} tasks=$tasks " +
                "workers=$workers submit_per_s=${"%.0f".format(kotlin.submitPerS)} " +
                "rust_e2e_per_s=${"%.0f".format(rust.e2ePerS)} ratio=${"%.3f".format(kotlin.e2ePerS / rust.e2ePerS)}",
        )
    }
}
