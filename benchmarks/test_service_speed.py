"""The evaluation service (`fastfid serve`, one process, SQLite store) over loopback:

* one evaluation at d = FASTFID_BENCH_DIM (2048) posted through fastfid.client, beside the bare
  ``Reference.distance`` it wraps (group ``service-evaluation-d…``; target: within 1.2×);
* 8 concurrent clients at d = 64, with one server process and with ``--workers 2`` (this
  machine's 2 cores): evaluations per second and p50/p99 latency (target ≥ 200/s);
* a bounded soak: FASTFID_SOAK_EVALUATIONS (10,000) evaluations at d = 64 by 8 clients on the
  2-worker server, its resident memory (all processes) sampled as it goes; afterwards every
  acknowledged result must be in the store with its value. Memory must stay flat: its growth over
  the second half of the run below 5 % of the server's size.

Figures are printed (run with ``-s``); CI runs it small as a correctness check.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")

import fastfid  # noqa: E402
from conftest import BENCH_DIM, record  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from service_support import Server, make_token, stats_of  # noqa: E402

from fastfid.client import Service  # noqa: E402

GROUP = f"service-evaluation-d{BENCH_DIM}"
SOAK_EVALUATIONS = int(os.environ.get("FASTFID_SOAK_EVALUATIONS", "10000"))
CLIENTS = 8
SMALL_DIM = 64


def running_service(tmp_path_factory, *options: str):
    store = tmp_path_factory.mktemp("service-bench") / "store"
    token = make_token(store, "bench", "write")
    with Server(store, *options) as server:
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
