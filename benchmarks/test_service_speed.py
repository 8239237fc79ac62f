"""The evaluation service (`fastfid serve`, one process, SQLite store) over loopback:

* one evaluation at d = FASTFID_BENCH_DIM (2048) posted through fastfid.client, beside the bare
  ``Reference.distance`` it wraps (group ``service-evaluation-d…``; target: within 1.2×);
* 8 concurrent clients at d = 64, with one server process and with ``--workers 2`` (this
  machine's 2 cores): evaluations per second and p50/p99 latency (target ≥ 200/s);
* a bounded soak: FASTFID_SOAK_EVALUATIONS (10,000) evaluations at d = 64 by 8 clients on the
  2-worker server, its resident memory (all processes) sampled as it goes; afterwards every
  acknowledged result must be in the store with its value. Memory must stay flat: its growth over
  the second half of the run below 5 % of the server's size;
* a burst of 48 concurrent evaluations at d = FASTFID_BENCH_DIM while /healthz is asked every
  20 ms from a process of its own: every answer must come within 100 ms (it answers from the
  event loop; the evaluations queue for the server's work slots);
* reading FASTFID_HISTORY_ROWS (300,000) stored evaluations: every page of GET /evaluations, and
  a model's history as JSON, CSV and page, while the server's peak resident memory (VmHWM) is
  read before and after: it must grow by less than 64 MiB, however many rows there are.

Figures are printed (run with ``-s``); CI runs it small as a correctness check.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")

import fastfid  # noqa: E402
from support.benchmarks import BENCH_DIM, record  # noqa: E402

from support.service import Server, make_token, stats_of  # noqa: E402

from fastfid.client import Service  # noqa: E402

GROUP = f"service-evaluation-d{BENCH_DIM}"
SOAK_EVALUATIONS = int(os.environ.get("FASTFID_SOAK_EVALUATIONS", "10000"))
HISTORY_ROWS = int(os.environ.get("FASTFID_HISTORY_ROWS", "300000"))
CLIENTS = 8
SMALL_DIM = 64


def running_service(tmp_path_factory, *options: str):
    store = tmp_path_factory.mktemp("service-bench") / "store"
    token = make_token(store, "bench", "admin")
    with Server(store, "--max-requests-per-minute", "0", *options) as server:  # one token posts them all
        client = Service(server.url, token)
        client.upload_reference(f"small-{SMALL_DIM}", stats_of(np.random.default_rng(99), 5000, SMALL_DIM))
        yield server, client


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    yield from running_service(tmp_path_factory)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    yield from running_service(tmp_path_factory, "--workers", "2")


@pytest.fixture(scope="module")
def large(service):
    """A reference and generated statistics at the benchmark's dim (realistic: 10,000 samples each)."""
    rng = np.random.default_rng(0)
    reference, generated = stats_of(rng, 10_000, BENCH_DIM), stats_of(rng, 10_000, BENCH_DIM, shift=0.05)
    service[1].upload_reference("large", reference)
    service[1].evaluate(model="warm-up", checkpoint="0", reference="large", stats=generated)  # factorises once
    return fastfid.Reference(reference), generated


@pytest.mark.benchmark(group=GROUP)
def test_bare_reference_distance(benchmark, large, medians):
    reference, generated = large
    value = benchmark(reference.distance, generated)
    record(benchmark, medians, "bare")
    assert value == pytest.approx(fastfid.fid(generated, (reference.mean, reference._sigma)), rel=1e-9)


@pytest.mark.benchmark(group=GROUP)
def test_service_evaluation(benchmark, service, large, medians, timings_enabled):
    reference, generated = large
    client = service[1]
    result = benchmark(lambda: client.evaluate(model="bench", checkpoint="1", reference="large", stats=generated))
    record(benchmark, medians, "service")
    # The same float64 computation behind the network (a stored, reloaded reference): 1e-9 relative.
    assert result["fid"] == pytest.approx(reference.distance(generated), rel=1e-9)
    if timings_enabled and "bare" in medians:
        ratio = medians["service"] / medians["bare"]
        print(f"\nservice evaluation at d = {BENCH_DIM}: {1000 * medians['service']:.1f} ms median, "
              f"{ratio:.2f}× the bare Reference.distance ({1000 * medians['bare']:.1f} ms)")


def post_concurrently(client: Service, count: int, model: str, dim: int, server_pid: int | None = None):
    """``count`` evaluations by CLIENTS threads; (acknowledged results, latencies, seconds, RSS samples)."""
    statistics = [stats_of(np.random.default_rng(i), 200, dim) for i in range(32)]
    acknowledged: list[dict] = []
    latencies: list[float] = []
    memory: list[tuple[int, int]] = []
    lock = threading.Lock()
    counter = iter(range(count))

    def work() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            start = time.perf_counter()
            # As a training run posts: checkpoint after checkpoint, each a panel of 5 training × 2
            # sampling seeds (so verdicts go through fastfid.compare).
            result = client.evaluate(model=model, checkpoint=str(index // 10), reference=f"small-{dim}",
                                     stats=statistics[index % len(statistics)], train_seed=index % 5,
                                     sample_seed=index // 5 % 2)
            elapsed = time.perf_counter() - start
            with lock:
                acknowledged.append(result)
                latencies.append(elapsed)
                if server_pid is not None and len(acknowledged) % max(count // 20, 1) == 0:
                    memory.append((len(acknowledged), resident_bytes(server_pid)))

    threads = [threading.Thread(target=work) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acknowledged, np.array(latencies), time.perf_counter() - start, memory


def resident_bytes(pid: int) -> int:
    """Resident memory of a process and its children (uvicorn's workers)."""
    total = 0
    with open(f"/proc/{pid}/status") as status:
        total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        total += sum(resident_bytes(int(child)) for child in children.read().split())
    return total


@pytest.mark.parametrize("processes", ["one process", "2 workers"])
def test_concurrent_clients(request, processes):
    server, client = request.getfixturevalue("service" if processes == "one process" else "two_workers")
    count = min(SOAK_EVALUATIONS, 2000)
    acknowledged, latencies, seconds, _ = post_concurrently(client, count, "load", SMALL_DIM)
    assert len(acknowledged) == count == len({r["id"] for r in acknowledged})
    print(f"\n{CLIENTS} clients, d = {SMALL_DIM}, {processes}: {count / seconds:.0f} evaluations/s; latency p50 "
          f"{1000 * np.percentile(latencies, 50):.1f} ms, p99 {1000 * np.percentile(latencies, 99):.1f} ms")


def test_soak_memory_flat_and_nothing_lost(two_workers):
    server, client = two_workers
    assert server.process is not None
    acknowledged, latencies, seconds, memory = post_concurrently(client, SOAK_EVALUATIONS, "soak", SMALL_DIM,
                                                                 server.process.pid)
    stored = {r["id"]: r["fid"] for r in client.evaluations(model="soak")}
    assert len(stored) == len(acknowledged) == SOAK_EVALUATIONS
    assert all(stored[r["id"]] == r["fid"] for r in acknowledged)
    half = [rss for done, rss in memory if done >= SOAK_EVALUATIONS // 2]
    growth = (half[-1] - half[0]) / half[0]
    print(f"\nsoak: {SOAK_EVALUATIONS} evaluations in {seconds:.0f} s ({SOAK_EVALUATIONS / seconds:.0f}/s), p99 "
          f"{1000 * np.percentile(latencies, 99):.1f} ms; server RSS {memory[0][1] / 2**20:.0f} → "
          f"{memory[-1][1] / 2**20:.0f} MiB, {100 * growth:+.2f}% over the second half")
    print("RSS (MiB) after each twentieth: " + " ".join(f"{rss / 2**20:.0f}" for _, rss in memory))
    assert growth < 0.05


# The probe runs in a process of its own, so that the 48 client threads here (each serialising a
# statistics file) do not delay it: what it measures is the server's answer.
_PROBE = """
import sys, time, urllib.request
url, latencies = sys.argv[1], []
while sys.stdin.readline().strip() != "stop":
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    latencies.append(time.perf_counter() - started)
    print(len(latencies), flush=True)
print(" ".join(f"{x:.6f}" for x in latencies), flush=True)
"""


def test_health_answers_within_100_ms_during_a_burst_of_evaluations(service, large):
    import subprocess

    server, client = service
    _, generated = large
    burst, results = 48, []

    def evaluate(index: int) -> None:
        results.append(client.evaluate(model="burst", checkpoint=str(index), reference="large", stats=generated))

    with subprocess.Popen([sys.executable, "-c", _PROBE, f"{server.url}/healthz"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as probe:
        assert probe.stdin is not None and probe.stdout is not None
        workers = [threading.Thread(target=evaluate, args=(i,)) for i in range(burst)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):  # one probe every 20 ms while the burst lasts
            probe.stdin.write("go\n")
            probe.stdin.flush()
            probe.stdout.readline()
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        probe.stdin.write("stop\n")
        probe.stdin.flush()
        latencies = np.array([float(x) for x in probe.stdout.readline().split()])
    assert len(results) == burst and len({r["id"] for r in results}) == burst and len(latencies) > 0
    print(f"\n{burst} evaluations at d = {BENCH_DIM} in {seconds:.1f} s; /healthz meanwhile: {len(latencies)} answers, "
          f"p50 {1000 * np.percentile(latencies, 50):.1f} ms, p99 {1000 * np.percentile(latencies, 99):.1f} ms, "
          f"max {1000 * latencies.max():.1f} ms")
    assert latencies.max() < 0.1


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc (Linux only)")


def test_reading_many_evaluations_keeps_memory_flat(tmp_path):
    """Rows go straight into the store (as HISTORY_ROWS posts would leave them), then are read back."""
    from fastfid.service.store import Store, evaluations

    if not Path("/proc/self/status").exists():
        pytest.skip("reads the server's peak memory from /proc")
    store_path = tmp_path / "store"
    token = make_token(store_path, "bench", "read")
    store = Store(store_path)
    rng = np.random.default_rng(5)
    checkpoints = 200
    with store.engine.begin() as connection:
        for first in range(0, HISTORY_ROWS, 20_000):
            connection.execute(evaluations.insert(), [
                dict(model="long", checkpoint=str(i % checkpoints), reference="golden", reference_version=1,
                     reference_sha256="0" * 64, feature_space="bench", fid=10 + float(v), dim=SMALL_DIM,
                     input_kind="stats", inputs_sha256='["0"]', fastfid_version="bench", submitter="bench",
                     created=1.8e9 + i) for i, v in zip(range(first, min(first + 20_000, HISTORY_ROWS)),
                                                     rng.standard_normal(20_000))])
    store.close()
    with Server(store_path) as server:
        assert server.process is not None
        client = Service(server.url, token)
        client.health()
        client.evaluations(limit=10)
        before = _peak_rss(server.process.pid)
        started = time.perf_counter()
        rows = client.evaluations()
        paged = time.perf_counter() - started
        history = client.history("long")
        request = urllib.request.Request(f"{server.url}/models/long/history?format=csv",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as response:
            csv = response.read().decode()
        request = urllib.request.Request(f"{server.url}/models/long", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as response:
            page = response.read().decode()
        after = _peak_rss(server.process.pid)
    assert len(rows) == HISTORY_ROWS and [r["id"] for r in rows[:3]] == [1, 2, 3]
    assert len(history["checkpoints"]) == checkpoints == len(csv.splitlines()) - 1 and "<svg" in page
    assert all(p["evaluations"] == HISTORY_ROWS // checkpoints for p in history["checkpoints"])
    print(f"\n{HISTORY_ROWS:,} evaluations read in {HISTORY_ROWS // 1000 + 1} pages in {paged:.1f} s, then "
          f"their history (JSON, CSV, page): server peak RSS {before / 2**20:.0f} → {after / 2**20:.0f} MiB")
    assert after - before < 64 * 2**20
