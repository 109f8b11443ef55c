"""The README's main job, from Python: an embedded Hive with two in-process
handlers, a few tasks (one of which fails once and is retried), and every
task's event stream printed as it happens.

Run: ``python examples/python/quickstart.py`` (``HIVE_URL`` picks the backend;
default ``memory://``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any, Dict, List

import hive


async def main() -> int:
    url = os.environ.get("HIVE_URL", "memory://")
    async with await hive.Hive.open(url) as h:
        print(f"hive opened on {url}")

        # Who is calling: a user submits; Hive's system principal runs a system node.
        alice = hive.Principal.user("acme", "alice")
        ops = hive.Principal.system()

        # Two handlers on one in-process worker node.
        worker = hive.Worker("quickstart-node", capacity=4, system=True)
        translate_calls = 0

        @worker.handler("summarize")
        async def summarize(ctx: hive.TaskContext) -> Dict[str, Any]:
            text: str = ctx.input["text"]
            await ctx.log("stdout", f"summarizing {len(text)} characters")
            return {"summary": " ".join(text.split()[:4]) + "…"}

        @worker.handler("translate")
        async def translate(ctx: hive.TaskContext) -> Dict[str, Any]:
            nonlocal translate_calls
            translate_calls += 1
            if translate_calls == 1:  # fails on its first attempt to show a retry
                raise hive.TaskFailure("upstream_busy", "translation service busy")
            return {"fr": ctx.input["text"].replace("hello", "bonjour")}

        handle = await h.start_worker(ops, worker)

        retry_fast = hive.RetryPolicy.attempts(3, initial_interval=0.2)
        specs: List[Dict[str, Any]] = [
            {"agent": "summarize",
             "input": {"text": "Hive runs agent tasks on worker nodes and streams their events"}},
            {"agent": "translate", "input": {"text": "hello world"}, "retry": retry_fast},
            {"agent": "summarize", "input": {"text": "every task ends with exactly one terminal event"}},
        ]

        async def follow(agent: str, task_id: str) -> List[hive.TaskEvent]:
            # From seq 0: replay what is stored, then follow live; ends after the terminal event.
            events = []
            async for event in h.events(alice, task_id):
                kind = {"type": event.type, **event.data}
                print(f"  [{agent} …{task_id[-6:]}] seq={event.seq} {json.dumps(kind, ensure_ascii=False)}")
                events.append(event)
            return events

        streams = []
        for spec in specs:
            submitted = await h.submit(alice, spec)
            print(f"submitted {submitted.id} ({spec['agent']})")
            streams.append(asyncio.create_task(follow(spec["agent"], submitted.id)))

        failed = 0
        for events in await asyncio.gather(*streams):
            if not events or not events[-1].is_terminal:
                raise SystemExit("a stream ended without a terminal event")
            if events[-1].type != "succeeded":
                failed += 1
        await handle.shutdown()

    if failed:
        print(f"{failed} task(s) did not succeed", file=sys.stderr)
        return 1
    print("all tasks ended; every stream closed after its terminal event")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
