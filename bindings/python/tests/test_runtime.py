"""The runtime under the API: concurrency without deadlock, cancellation and
Ctrl-C leaving no task without an end, clean interpreter exit, fork."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List, Tuple

import pytest

import hive
from conftest import open_backend


async def test_1000_concurrent_python_handlers(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    n = 1000
    running = 0
    peak = 0
    everyone_in = asyncio.Event()
    worker = hive.Worker("wide", capacity=n, claim_batch=n)

    @worker.handler(agent)
    async def barrier(ctx: hive.TaskContext) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == n:
            everyone_in.set()
        # Every handler waits for all the others: only true concurrency ends this.
        await everyone_in.wait()
        await ctx.log("stdout", "through")
        running -= 1
        return int(ctx.input)

    handle = await h.start_worker(alice, worker)
    subs = await h.submit_batch(alice, [{"agent": agent, "input": i} for i in range(n)])
    # The engine answers other calls while 1,000 handlers wait on the loop.
    await asyncio.wait_for(everyone_in.wait(), 60)
    probe = await asyncio.wait_for(h.get_task(alice, subs[0].id), 10)
    assert probe.state in ("running", "succeeded")
    feed = h.feed(alice, 0, terminal_only=True)
    done: List[hive.FeedEvent] = []
    while len(done) < n:
        done += await asyncio.wait_for(feed.next_batch(n), 60)
    assert peak == n
    assert sorted(e.event.output for e in done) == list(range(n))
    await handle.shutdown()


def _run_loop_in_thread(main: Any) -> Tuple[threading.Thread, "asyncio.Future[Any]", List[BaseException]]:
    """Runs ``asyncio.run(main())`` in a thread; returns the thread, a future
    with that run's main task, and the exception the run ended with."""
    ready: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
    outer = asyncio.get_running_loop()
    ended: List[BaseException] = []

    async def wrapper() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        outer.call_soon_threadsafe(ready.set_result, (loop, task))
        await main()

    def target() -> None:
        try:
            asyncio.run(wrapper())
        except BaseException as e:  # noqa: BLE001 - recorded for the test
            ended.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, ready, ended


async def test_interrupting_a_handler_loop_ends_its_tasks(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    """Ctrl-C in a host: asyncio.run's main task is cancelled, the run cancels
    the handler tasks and closes the loop. Their Hive tasks must still end."""
    started = threading.Event()
    worker = hive.Worker("interrupted", capacity=2, heartbeat_interval=0.1)

    @worker.handler(agent)
    async def forever(ctx: hive.TaskContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    handles: List[hive.WorkerHandle] = []

    async def host() -> None:
        handles.append(await h.start_worker(alice, worker))
        await asyncio.sleep(3600)

    thread, ready, ended = _run_loop_in_thread(host)
    loop, main_task = await asyncio.wait_for(ready, 10)
    subs = await h.submit_batch(alice, [{"agent": agent, "retry": {"max_attempts": 1}} for _ in range(2)])
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    await asyncio.sleep(0.2)
    loop.call_soon_threadsafe(main_task.cancel)  # what SIGINT does to asyncio.run
    await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
    assert not thread.is_alive()
    assert ended and isinstance(ended[0], asyncio.CancelledError)
    for s in subs:
        t = await h.wait(alice, s.id, timeout=20)
        assert t.state == "failed", t
        assert t.error is not None and t.error.code == "CancelledError"
    # The worker stopped with its loop: its node is gone.
    node_id = handles[0].node_id
    for _ in range(100):
        if all(n.id != node_id for n in await h.list_nodes(alice)):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the interrupted worker's node was not removed")


async def test_jobs_never_started_before_the_loop_closed_are_retried(
    h: hive.Hive, alice: hive.Principal, agent: str
) -> None:
    """A worker whose loop is gone answers attempts 'worker_stopped' at once
    (retried by policy) and stops claiming."""
    worker = hive.Worker("gone", heartbeat_interval=0.1)

    @worker.handler(agent)
    async def ok(ctx: hive.TaskContext) -> str:
        return "ran"

    async def host() -> None:
        await h.start_worker(alice, worker)

    thread, ready, _ = _run_loop_in_thread(host)
    await asyncio.wait_for(ready, 10)
    await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
    s = await h.submit(alice, agent=agent)
    # A new worker on this loop picks the task up.
    handle = await h.start_worker(alice, worker)
    t = await h.wait(alice, s.id, timeout=20)
    assert t.state == "succeeded" and t.output == "ran"
    await handle.shutdown()


EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, signal, sys
    import hive

    # A parent that started this with SIGINT ignored (a background job of a
    # shell without job control, nohup) must not turn Ctrl-C off here.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def main() -> None:
        h = await hive.Hive.open(sys.argv[1])
        alice = hive.Principal.user("acme", "alice")
        worker = hive.Worker("exit", capacity=64)

        @worker.handler("quick")
        async def quick(ctx):
            await ctx.log("stdout", "hi")
            return ctx.input

        @worker.handler("slow")
        async def slow(ctx):
            await asyncio.sleep(30)

        await h.start_worker(alice, worker)
        subs = await h.submit_batch(alice, [{"agent": "quick", "input": i} for i in range(50)])
        await h.submit_batch(alice, [{"agent": "slow"} for _ in range(5)])
        async for _ in h.events(alice, subs[-1].id):
            pass
        # Left running on purpose: slow handlers, the worker, the engine, a feed
        # waiting for events. asyncio.run cancels the tasks; the exit hook
        # drains the rest.
        feed = h.feed(alice, 0)
        await feed.next_batch(10)
        asyncio.ensure_future(feed.next_batch(10_000))

    asyncio.run(main())
    print("clean")
    """
)


def _run_exit_script(path: Path, url: str) -> Tuple[int, str, str, float]:
    start = time.monotonic()
    p = subprocess.run(
        [sys.executable, str(path), url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return p.returncode, p.stdout, p.stderr, time.monotonic() - start


def test_short_asyncio_run_scripts_exit_cleanly_50_times(tmp_path: Path) -> None:
    script = tmp_path / "exit_script.py"
    script.write_text(EXIT_SCRIPT)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: _run_exit_script(script, "memory://"), range(50)))
    bad = [(rc, err[-2000:]) for rc, out, err, _ in results if rc != 0 or "clean" not in out]
    assert not bad, f"{len(bad)} of 50 runs did not exit cleanly; first: {bad[0]}"
    noisy = [err for _, _, err, _ in results if "Fatal Python error" in err or "panicked" in err]
    assert not noisy, noisy[0]
    slowest = max(r[3] for r in results)
    assert slowest < 60, f"a run took {slowest:.1f}s to exit"


SIGINT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import hive

    async def main() -> None:
        h = await hive.Hive.open(sys.argv[1])
        alice = hive.Principal.user("acme", "alice")
        worker = hive.Worker("ctrl-c")

        @worker.handler("forever")
        async def forever(ctx):
            print("started", ctx.task_id, flush=True)
            await asyncio.sleep(3600)

        await h.start_worker(alice, worker)
        await h.submit(alice, agent="forever", retry={"max_attempts": 1})
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_ctrl_c_ends_the_running_tasks(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'ctrl-c.db'}"
    probe = await open_backend(url)
    await probe.close()
    script = tmp_path / "sigint_script.py"
    script.write_text(SIGINT_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
    assert line.startswith("started"), (line, proc.stderr.read() if proc.stderr else "")
    task_id = line.split()[1]
    proc.send_signal(signal.SIGINT)
    rc = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 60)
    err = proc.stderr.read() if proc.stderr else ""
    assert rc in (1, 130, -signal.SIGINT), (rc, err)
    assert "KeyboardInterrupt" in err and "Fatal Python error" not in err, err
    h = await hive.Hive.open(url)
    try:
        t = await h.wait(hive.Principal.user("acme", "alice"), task_id, timeout=10)
        assert t.state == "failed" and t.error is not None and t.error.code == "CancelledError"
    finally:
        await h.close()


ASYNC_WITH_SIGINT_SCRIPT = textwrap.dedent(
    """
    import asyncio, signal, sys, time
    import hive

    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def main() -> None:
        try:
            async with await hive.Hive.open(sys.argv[1]) as h:
                alice = hive.Principal.user("acme", "alice")
                worker = hive.Worker("ctrl-c", shutdown_grace=30)

                @worker.handler("forever")
                async def forever(ctx):
                    print("started", ctx.task_id, flush=True)
                    await asyncio.sleep(3600)

                await h.start_worker(alice, worker)
                await h.submit(alice, agent="forever", retry={"max_attempts": 3})
                await asyncio.sleep(3600)
        finally:
            print("closed", time.time(), flush=True)

    asyncio.run(main())
    """
)


async def test_ctrl_c_under_async_with_closes_at_once(tmp_path: Path) -> None:
    """Issue 18, item 4: leaving ``async with`` by Ctrl-C does not wait the
    workers' 30 s grace for handlers that are cancelled anyway: the close
    takes at most a second and the interrupted task goes back to the queue."""
    url = f"sqlite://{tmp_path / 'ctrl-c-with.db'}"
    probe = await open_backend(url)
    await probe.close()
    script = tmp_path / "sigint_with_script.py"
    script.write_text(ASYNC_WITH_SIGINT_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, proc.stdout.readline)
    assert line.startswith("started"), (line, proc.stderr.read() if proc.stderr else "")
    task_id = line.split()[1]
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    rc = await loop.run_in_executor(None, proc.wait, 30)
    out = proc.stdout.read()
    err = proc.stderr.read() if proc.stderr else ""
    exited = time.time() - sent
    assert rc in (1, 130, -signal.SIGINT), (rc, err)
    assert "KeyboardInterrupt" in err and "Fatal Python error" not in err, err
    closed = [float(x.split()[1]) for x in out.splitlines() if x.startswith("closed")]
    assert closed, (out, err)
    took = closed[0] - sent
    print(f"ctrl-c under async with: closed {took:.3f}s after SIGINT, exited after {exited:.3f}s")
    assert took <= 1.0, f"the close took {took:.2f}s"
    h = await hive.Hive.open(url)
    try:
        alice = hive.Principal.user("acme", "alice")
        t = await h.get_task(alice, task_id)
        assert t.state == "pending", f"back in the queue, not {t.state}"
    finally:
        await h.close()


async def test_async_with_drains_gracefully_on_a_normal_exit(tmp_path: Path) -> None:
    """Without an exception, leaving ``async with`` lets running handlers
    finish and report before the engine closes."""
    url = f"sqlite://{tmp_path / 'graceful.db'}"
    alice = hive.Principal.user("acme", "alice")
    started = asyncio.Event()
    async with await open_backend(url) as h:
        worker = hive.Worker("graceful")

        @worker.handler("slowish")
        async def slowish(ctx: hive.TaskContext) -> Any:
            started.set()
            await asyncio.sleep(0.3)
            return "finished"

        await h.start_worker(alice, worker)
        submitted = await h.submit(alice, agent="slowish")
        await asyncio.wait_for(started.wait(), 30)
    h2 = await hive.Hive.open(url)
    try:
        t = await h2.get_task(alice, submitted.id)
        assert t.state == "succeeded", t.state
        assert t.output == "finished"
    finally:
        await h2.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
async def test_the_runtime_refuses_to_run_after_fork(h: hive.Hive, alice: hive.Principal, agent: str) -> None:
    await h.submit(alice, agent=agent)  # the runtime is running in this process
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        said: List[str] = []

        def child() -> None:
            # A thread of its own: the forked thread still "runs" the parent's loop.
            try:
                asyncio.run(hive.Hive.open("memory://"))
                said.append("no error")
            except RuntimeError as e:
                said.append(str(e))
            except BaseException as e:  # noqa: BLE001
                said.append(f"{type(e).__name__}: {e}")

        t = threading.Thread(target=child)
        t.start()
        t.join(30)
        os.write(w, (said[0] if said else "no answer").encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        answer = f.read()
    assert status == 0
    assert "fork" in answer, answer
