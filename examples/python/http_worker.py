#!/usr/bin/env python3
"""A remote Hive worker over Honeycomb's HTTP API, with the standard library only.

It joins a Honeycomb from any machine without linking Hive: it registers a
node (or uses a worker token it is given), then loops — claim with a long
poll, run each task's handler, heartbeat while it runs, log lines, report
the outcome with the lease's fencing token. A report on a lease that was
taken away is refused (`lease_lost`) and dropped, as in-process.

    python3 http_worker.py --url http://127.0.0.1:8780 --token hive_… \
        [--worker-token hive_…] [--agents echo,fail] [--capacity 4] [--max-tasks N]

Handlers here: `echo` (returns its input), `fail` (fails non-retryably with
code `Boom`), `sleep` (sleeps input["seconds"], heartbeating), `nap` (sleeps without
heartbeating), `log` (writes
input["lines"] log lines, then returns their count). Anything else fails with
code `UnknownAgent`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Optional

Json = dict[str, Any]


class HiveHTTPError(Exception):
    """A problem answer (application/problem+json) from Honeycomb."""

    def __init__(self, status: int, problem: Json):
        super().__init__(f"{status} {problem.get('code')}: {problem.get('detail')}")
        self.status = status
        self.problem = problem


class Client:
    """A minimal Honeycomb client: JSON in, JSON out, problems as exceptions."""

    def __init__(self, url: str, token: str, timeout: float = 40.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Optional[Json] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"code": "http", "detail": raw.decode(errors="replace")}
            raise HiveHTTPError(e.code, problem) from None


class Worker:
    """Claims, runs, heartbeats, logs and reports for one node."""

    def __init__(self, client: Client, agents: list[str], capacity: int):
        self.client = client
        self.agents = agents
        self.capacity = capacity
        self.ran = 0
        self.lost = 0

    # -- handlers ---------------------------------------------------------
    def handle(self, task: Json) -> Json:
        agent = task["spec"]["agent"]
        payload = task["spec"].get("input")
        token = task["token"]
        if agent == "echo":
            return {"echo": payload}
        if agent == "fail":
            raise TaskFailure("Boom", "the handler failed on purpose", non_retryable=True)
        if agent == "sleep":
            deadline = time.monotonic() + float(payload.get("seconds", 1))
            while time.monotonic() < deadline:
                time.sleep(0.2)
                if not self.beat(token, {"left": round(deadline - time.monotonic(), 1)}):
                    raise LeaseGone()
            return {"slept": payload.get("seconds", 1)}
        if agent == "nap":
            # Sleeps without heartbeating: a lease taken away meanwhile is
            # only noticed when the report is refused (lease_lost).
            time.sleep(float(payload.get("seconds", 1)))
            return {"napped": payload.get("seconds", 1)}
        if agent == "log":
            n = int(payload.get("lines", 1))
            lines = [{"token": token, "stream": "stdout", "line": f"line {i}"} for i in range(n)]
            self.client.call("POST", "/api/worker/log", {"lines": lines})
            return {"lines": n}
        raise TaskFailure("UnknownAgent", f"no handler for {agent}", non_retryable=True)

    def beat(self, token: Json, progress: Optional[Json]) -> bool:
        """Heartbeats a lease; False when it was taken away (stop the attempt)."""
        answer = self.client.call("POST", "/api/worker/heartbeat",
                                  {"beats": [{"token": token, "progress": progress}]})
        result: Json = answer["results"][0]
        return "ack" in result

    # -- the loop ---------------------------------------------------------
    def run_one(self, task: Json) -> Optional[Json]:
        try:
            output = self.handle(task)
            report = {"token": task["token"], "outcome": "success", "output": output}
        except TaskFailure as f:
            report = {"token": task["token"], "outcome": "failure", "error": f.error}
        except LeaseGone:
            return None
        except Exception as e:  # a handler bug fails the attempt, named by its class
            report = {"token": task["token"], "outcome": "failure",
                      "error": {"code": type(e).__name__, "message": str(e)}}
        return report

    def report(self, reports: list[Json]) -> None:
        if not reports:
            return
        answer = self.client.call("POST", "/api/worker/report", {"reports": reports})
        for r in answer["results"]:
            if "ack" in r:
                self.ran += 1
            elif r.get("problem", {}).get("code") == "lease_lost":
                self.lost += 1
            else:
                print(f"http_worker: report refused: {r.get('problem')}", file=sys.stderr)

    def loop(self, max_tasks: int | None, idle_exit: float | None) -> None:
        idle_since = time.monotonic()
        while max_tasks is None or self.ran + self.lost < max_tasks:
            claim = self.client.call("POST", "/api/worker/claim", {
                "max": self.capacity, "agents": self.agents, "start": True, "wait": "20s"})
            tasks: list[Json] = claim["tasks"]
            if not tasks:
                if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    return
                continue
            idle_since = time.monotonic()
            results: list[Optional[Json]] = [None] * len(tasks)

            def run(i: int, t: Json) -> None:
                results[i] = self.run_one(t)

            threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(tasks)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            self.report([r for r in results if r is not None])


class TaskFailure(Exception):
    def __init__(self, code: str, message: str, non_retryable: bool = False):
        super().__init__(message)
        self.error = {"code": code, "message": message, "non_retryable": non_retryable}


class LeaseGone(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8780")
    ap.add_argument("--token", help="an API token that may register a node")
    ap.add_argument("--worker-token", help="a worker token (skips registering a node)")
    ap.add_argument("--agents", default="", help="comma-separated agents (all when empty)")
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--max-tasks", type=int, help="exit after this many tasks")
    ap.add_argument("--idle-exit", type=float, help="exit after this many idle seconds")
    args = ap.parse_args(argv)
    worker_token = args.worker_token
    if worker_token is None:
        if not args.token:
            ap.error("--token or --worker-token is needed")
        node = Client(args.url, args.token).call(
            "POST", "/api/nodes", {"name": "python-http-worker", "capacity": args.capacity})
        worker_token = node["worker_token"]
        print(f"http_worker: registered node {node['node']['id']}", file=sys.stderr, flush=True)
    agents = [a for a in args.agents.split(",") if a]
    worker = Worker(Client(args.url, worker_token), agents, args.capacity)
    try:
        worker.loop(args.max_tasks, args.idle_exit)
    except KeyboardInterrupt:
        pass
    print(json.dumps({"ran": worker.ran, "lease_lost": worker.lost}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
