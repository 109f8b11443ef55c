"""End-to-end throughput of the Python binding with Python handlers.

Submits N tasks in batches while in-process workers run them with a no-op
``async def`` handler, and a tenant-feed subscriber counts terminal events.
``e2e_per_s`` is N divided by the time from the first submit until the
subscriber has seen every task's terminal event (as in ``hive-bench``).

Run: ``python examples/python/bench.py [--tasks N] [--workers K] [--url URL]``
Prints one line:

    hive-bench lang=python backend=memory e2e_per_s=… tasks=N workers=K submit_per_s=…
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, Dict, List

import hive


async def run(url: str, tasks: int, workers: int, capacity: int, batch: int) -> Dict[str, Any]:
    h = await hive.Hive.open(url)
    ops = hive.Principal.system()
    tenant = hive.Principal.user("bench", "bench")

    worker = hive.Worker("bench", capacity=capacity, claim_batch=512, system=True)

    @worker.handler("noop")
    async def noop(ctx: hive.TaskContext) -> None:
        return None

    handles = [await h.start_worker(ops, worker) for _ in range(workers)]
    feed = h.feed(tenant, 0, terminal_only=True)

    spec = {"agent": "noop"}
    submitted_at = 0.0

    async def submit() -> None:
        nonlocal submitted_at
        left = tasks
        while left > 0:
            n = min(batch, left)
            await h.submit_batch(tenant, [spec] * n)
            left -= n
        submitted_at = time.perf_counter()

    start = time.perf_counter()
    submitter = asyncio.create_task(submit())
    seen = 0
    failed = 0
    while seen < tasks:
        events: List[hive.FeedEvent] = await feed.next_batch(100_000)
        seen += len(events)
        failed += sum(1 for e in events if e.event.type != "succeeded")
    end = time.perf_counter()
    await submitter
    for handle in handles:
        await handle.shutdown()
    await h.close()
    if failed:
        raise SystemExit(f"{failed} tasks did not succeed")
    return {
        "e2e_per_s": tasks / (end - start),
        "submit_per_s": tasks / (submitted_at - start),
        "seconds": end - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="runs in one process; the best is printed")
    args = parser.parse_args()
    backend = args.url.split("://", 1)[0]
    best: Dict[str, Any] = {}
    for _ in range(args.runs):
        r = asyncio.run(run(args.url, args.tasks, args.workers, args.capacity, args.batch))
        if not best or r["e2e_per_s"] > best["e2e_per_s"]:
            best = r
    print(
        f"hive-bench lang=python backend={backend} e2e_per_s={best['e2e_per_s']:.0f} "
        f"tasks={args.tasks} workers={args.workers} submit_per_s={best['submit_per_s']:.0f}"
    )


if __name__ == "__main__":
    main()
