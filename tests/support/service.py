"""Helpers of the service tests: a real `fastfid serve` process on loopback, tokens, statistics."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

import fastfid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_token(store: Path, name: str, scope: str, database: str | None = None) -> str:
    command = [sys.executable, "-m", "fastfid", "token", "create", name, "--scope", scope, "--store", str(store)]
    if database:
        command += ["--database", database]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


class Server:
    """`fastfid serve` in a child process; its JSON log lines are kept in ``log``."""

    def __init__(self, store: Path, *options: str, port: int | None = None):
        self.store, self.options = Path(store), options
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.store.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Server":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fastfid", "serve", "--store", str(self.store), "--port", str(self.port),
                 *self.options], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fastfid serve exited with {self.process.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fastfid serve did not answer within {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no shutdown code runs
        self.process.wait()

    def log_records(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stats_of(rng, n: int, d: int, *, shift: float = 0.0, space: str | None = "test-space") -> fastfid.FeatureStats:
    stats = fastfid.FeatureStats.from_features(features(rng, n, d, shift=shift))
    stats.feature_space = space
    return stats


def features(rng, n: int, d: int, *, shift: float = 0.0) -> np.ndarray:
    """Correlated features: a fixed mixing (seeded by d) of Gaussians, shifted."""
    mixing = np.random.default_rng(d).standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ mixing + shift


def saved(stats: fastfid.FeatureStats, path: Path) -> Path:
    stats.save(path)
    return path


class Webhook:
    """A loopback HTTP server that answers 500 to the first ``failures`` posts, then 200, and keeps
    every JSON body it was sent."""

    def __init__(self, failures: int = 0):
        self.failures, self.bodies, self.attempts = failures, [], 0
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts += 1
                if hook.attempts <= hook.failures:
                    self.send_response(500)
                    self.end_headers()
                    return
                hook.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Webhook":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(condition, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def run_together(function, count: int) -> list:
    """``function(i)`` for i < count in threads released together by a barrier; their results (an
    exception in any fails the caller's test)."""
    results, errors = [None] * count, []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = function(index)
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results
