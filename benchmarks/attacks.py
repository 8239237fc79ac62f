"""Issue 29's sixteen attacks on a real `fastfid serve`, sent as a hostile client sends them, on SQLite
and on PostgreSQL: each attack's answer, its time, and the server's peak RSS growth (VmHWM, reset
before each attack). Not a pytest file: the tests assert the outcomes (tests/test_service*.py); this
prints the costs for a closing note or a capacity plan.

    python benchmarks/attacks.py            # SQLite, and PostgreSQL where a server can start here
"""

from __future__ import annotations

import http.client
import io
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import hostile  # noqa: E402
from support.postgres import Unavailable, postgres_server  # noqa: E402
from support.service import Server, make_token, run_together, stats_of  # noqa: E402

from fastfid.client import Service, ServiceError, _multipart  # noqa: E402
from fastfid.service.store import state_bytes  # noqa: E402

D = 64  # the reference's dim, as the attacks used
SPACE = "test-space"


class Clock:
    """The time spent inside ``with CLOCK:`` blocks, the hostile requests, not the attacker's making of
    its files; and the server's peak RSS from the first block on (its setup requests come before)."""

    def __init__(self):
        self.start(None)

    def start(self, pid: int | None) -> None:
        self.pid, self.seconds, self.before = pid, 0.0, None

    def grown(self) -> float | None:
        after = hostile.peak_rss(self.pid)
        return None if self.before is None or after is None else (after - self.before) / 2**20

    def __enter__(self):
        if self.pid is not None and self.before is None and hostile.reset_peak_rss(self.pid):
            self.before = hostile.peak_rss(self.pid)
        self._started = time.monotonic()

    def __exit__(self, *exc):
        self.seconds += time.monotonic() - self._started


CLOCK = Clock()


class Target:
    """One database's store, its tokens, and how to start its server."""

    def __init__(self, folder: Path, url: str | None):
        self.folder, self.url = folder, url
        self.options = ("--database", url) if url else ()
        self.admin = make_token(folder, "admin", "admin", url)
        self.evaluator = make_token(folder, "evaluator", "evaluate", url)
        self.twins = [make_token(folder, "twin", "evaluate", url) for _ in range(2)]  # one name, two tokens

    def server(self, *options: str) -> Server:
        return Server(self.folder, *self.options, *options)


def send(server: Server, token: str, method: str, path: str, fields: dict | None = None, files: list | None = None,
         headers: dict | None = None) -> tuple[int, dict]:
    body, content_type = _multipart(fields or {}, files or [])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    try:
        with CLOCK:
            connection.request(method, path, body=body, headers={
                "Content-Type": content_type, "Authorization": f"Bearer {token}", **(headers or {})})
            response = connection.getresponse()
            text = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, {"text": text[:80].decode("latin-1")}


def _status(answer: tuple[int, dict]) -> str:
    status, body = answer
    return f"{status} {body.get('error', '')[:60]}".strip()


EVALUATE = {"model": "m", "checkpoint": "1", "reference": "golden"}


def file_of(stats) -> bytes:
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder:
        stats.save(Path(folder) / "s.npz")
        buffer.write((Path(folder) / "s.npz").read_bytes())
    return buffer.getvalue()


def spaces_stats_file(spaces: dict) -> bytes:
    from fastfid.representations import SpaceStats

    with tempfile.TemporaryDirectory() as folder:
        SpaceStats(spaces).save(Path(folder) / "spaces.npz")
        return (Path(folder) / "spaces.npz").read_bytes()


# --- the attacks: each returns what the server answered -------------------------------------------------
def spaces(target, server, count):
    return _status(send(server, target.evaluator, "POST", "/evaluations", EVALUATE,
                        [("stats", "s.npz", hostile.spaces_of_zeros(count, 63))]))


def spaces_put(target, server):
    return _status(send(server, target.admin, "PUT", "/references/bomb", {},
                        [("stats", "s.npz", hostile.spaces_of_zeros(32, 63))]))


def overlapping(target, server):
    return _status(send(server, target.evaluator, "POST", "/evaluations", EVALUATE,
                        [("stats", "s.npz", hostile.overlapping_zip())]))


def shared_stream(target, server):
    return _status(send(server, target.evaluator, "POST", "/evaluations", EVALUATE,
                        [("stats", "s.npz", hostile.shared_stream_zip())]))


def wide_features(target, server):
    rows = np.random.default_rng(1).standard_normal((128, 8192))  # 8 MiB of d = 8192 rows
    buffer = io.BytesIO()
    np.save(buffer, rows)
    return _status(send(server, target.evaluator, "POST", "/evaluations", {**EVALUATE, "feature_space": SPACE},
                        [("features", "f.npy", buffer.getvalue())]))


def wide_stats(target, server, dim):
    data = file_of(stats_of(np.random.default_rng(2), 20, dim, space=SPACE))
    answer = _status(send(server, target.evaluator, "POST", "/evaluations", EVALUATE, [("stats", "s.npz", data)]))
    return f"{answer} ({len(data) / 2**20:.0f} MiB sent)"


def header_flood(target, server):
    with CLOCK:
        answers = hostile.header_flood(server.port, connections=8, headers=1_000_000)
    return f"{sum(a.startswith(b'HTTP/1.1 431') for a in answers)} of 8 answered 431"


def long_header(target, server):
    with CLOCK:
        return hostile.long_header(server.port, 256)[:12].decode("latin-1") or "cut"


def trickle(target, server):
    with hostile.Trickle(server.port, target.admin, connections=2, every=5.0):  # under the 30 s idle timeout
        time.sleep(1)
        stats = stats_of(np.random.default_rng(3), 200, D, space=SPACE)
        with CLOCK:
            Service(server.url, target.evaluator).evaluate(model="m", checkpoint="t", reference="golden", stats=stats)
        return f"another evaluation answered in {CLOCK.seconds:.2f} s"


def metadata(target, server, member, mib):
    good = file_of(stats_of(np.random.default_rng(4), 100, D, space=SPACE))
    data = hostile.inflated_metadata(good, member, mib)
    answer = _status(send(server, target.evaluator, "POST", "/evaluations", EVALUATE, [("stats", "s.npz", data)]))
    return f"{answer} ({len(data) / 2**10:.0f} KiB sent)"


def controls(target, server):
    good = file_of(stats_of(np.random.default_rng(5), 100, D, space=SPACE))
    answers = [send(server, target.admin, "GET", "/references/gol%00den")[0],
               send(server, target.admin, "GET", "/evaluations?model=m%00")[0],
               send(server, target.evaluator, "POST", "/evaluations", {**EVALUATE, "reference": "gol\x00den"},
                    [("stats", "s.npz", good)])[0],
               send(server, target.admin, "PUT", "/references/nul", {"feature_space": "a\x00b"},
                    [("features", "f.npy", _rows(5))])[0]]
    return f"statuses {answers}"


def _rows(seed):
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(seed).standard_normal((100, D)))
    return buffer.getvalue()


def idempotency(target, server):
    key, stats = uuid.uuid4().hex, stats_of(np.random.default_rng(6), 100, D, space=SPACE)
    ids = [send(server, token, "POST", "/evaluations", EVALUATE, [("stats", "s.npz", file_of(stats))],
                {"Idempotency-Key": key})[1].get("id") for token in target.twins]
    return f"two tokens named 'twin', one key: ids {ids} ({'separate' if ids[0] != ids[1] else 'REPLAYED'})"


def canaries(target, server):
    client = Service(server.url, target.admin)
    for index in range(3):
        client.set_canary(f"far{index}", stats_of(np.random.default_rng(10 + index), 200, D, shift=3.0, space=SPACE),
                          reference="golden", low=0.0, high=1e-3)
    with CLOCK:
        run_together(lambda i: client.run_canary(f"far{i % 3}"), 30)
    return f"3 canaries run 10 times at once: {sum(len(client.alerts(f'far{i}')) for i in range(3))} alerts"


def quotas(target, server):
    client = Service(server.url, make_token(target.folder, "filler", "admin", target.url), retries=0)
    uploads = [stats_of(np.random.default_rng(index), 100, D, space=SPACE) for index in range(6)]

    def upload(index):
        try:
            return client.upload_reference(f"fill{index}", uploads[index])["version"]
        except ServiceError as error:
            return error.status

    with CLOCK:
        outcomes = run_together(upload, 6)
    try:
        client.set_canary("over", stats_of(np.random.default_rng(9), 100, D, space=SPACE), reference="golden", low=0,
                          high=1e9)
        canary = "canary stored"
    except ServiceError as error:
        canary = f"canary {error.status}"
    return f"6 uploads at once, quota fits 1: {outcomes.count(1)} stored; {canary}"


def readiness(target, server):
    client = Service(server.url, target.admin)
    record = client.upload_reference("victim", stats_of(np.random.default_rng(7), 200, D, space=SPACE))
    first = send(server, target.admin, "GET", "/readyz")[0]
    if target.url is None:
        path = target.folder / "statistics" / f"{record['state_sha256']}.npz"
        info, data = path.stat(), bytearray(path.read_bytes())
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    else:
        import psycopg

        with psycopg.connect(target.url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as connection:
            connection.execute("UPDATE blobs SET data = overlay(data placing '\\xff'::bytea from 200 for 1) "
                               "WHERE sha256 = %s", (record["state_sha256"],))
    time.sleep(1.2)  # --verify-every 1
    return f"/readyz {first} before, {send(server, target.admin, 'GET', '/readyz')[0]} after a flipped byte"


def spaces_transaction(target, server):
    client = Service(server.url, target.admin)
    references = {"a": stats_of(np.random.default_rng(20), 200, D, space="space-a"),
                  "b": stats_of(np.random.default_rng(21), 200, D, space="space-b")}
    client._request("PUT", "/references/pair", files=[("stats", "s.npz", spaces_stats_file(references))])
    wrong = {"a": stats_of(np.random.default_rng(22), 100, D, space="space-a"),
             "b": stats_of(np.random.default_rng(23), 100, D, space="other")}  # the second space fails
    right = {"a": wrong["a"], "b": stats_of(np.random.default_rng(23), 100, D, space="space-b")}
    fields, key = {**EVALUATE, "reference": "pair"}, {"Idempotency-Key": uuid.uuid4().hex}
    wrong_file, right_file = spaces_stats_file(wrong), spaces_stats_file(right)
    first = send(server, target.evaluator, "POST", "/evaluations", fields, [("stats", "s.npz", wrong_file)], key)[0]
    stored = len(client.evaluations(reference="pair.a"))
    retry = send(server, target.evaluator, "POST", "/evaluations", fields, [("stats", "s.npz", right_file)], key)[0]
    return f"second space wrong: {first}, {stored} stored; corrected retry, same key: {retry}"


def signin(target, server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    with CLOCK:
        connection.request("POST", "/signin", body=f"token={target.admin}", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
        status = connection.getresponse().status
    connection.close()
    return f"cross-site sign-in form: {status}"


def labels(target, server):
    rows = _rows(8)
    answers = [send(server, target.admin, "PUT", "/references/label", {"feature_space": label},
                    [("features", "f.npy", rows)])[0] for label in ("\u202eevil", "x" * (1 << 20))]
    return f"bidi and 1 MB feature_space: {answers}"


def ignored_valfd(target, server):
    good = file_of(stats_of(np.random.default_rng(9), 100, D, space=SPACE))
    return _status(send(server, target.evaluator, "POST", "/evaluations",
                        {**EVALUATE, "validation_fd": json.dumps({SPACE: 1.0})}, [("stats", "s.npz", good)]))


def _wide_reference(target, server):
    """A d = 2048 reference, uploaded before the attack is timed."""
    client = Service(server.url, target.admin)
    try:
        client.reference("wide")
    except ServiceError:
        client.upload_reference("wide", stats_of(np.random.default_rng(11), 2100, 2048, space=SPACE))


def features_cost(target, server):
    _wide_reference(target, server)
    # 574 KB of d = 2048 float32 rows, against a d = 2048 reference: 70 rows, enough for a jackknife
    rows = np.random.default_rng(10).standard_normal((70, 2048)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    fields = {**EVALUATE, "reference": "wide", "feature_space": SPACE}
    return _status(send(server, target.evaluator, "POST", "/evaluations", fields,
                        [("features", "f.npy", buffer.getvalue())]))


def accepted_wide(target, server):
    _wide_reference(target, server)
    data = file_of(stats_of(np.random.default_rng(12), 2100, 2048, space=SPACE))
    answer = _status(send(server, target.evaluator, "POST", "/evaluations", {**EVALUATE, "reference": "wide"},
                          [("stats", "s.npz", data)]))
    return f"{answer} ({len(data) / 2**20:.0f} MiB sent)"


def many_members(target, server):
    data = hostile.many_members(50_000)
    answer = _status(send(server, target.evaluator, "POST", "/evaluations", EVALUATE, [("stats", "s.npz", data)]))
    return f"{answer} ({len(data) / 2**20:.1f} MiB sent)"


def token_guesses(target, server):
    statuses = {send(server, f"fastfid_{uuid.uuid4().hex}", "GET", "/references")[0] for _ in range(200)}
    return f"200 wrong tokens: {sorted(statuses)} (not rate limited, by decision)"


# (issue item, attack, function, the server's options)
ATTACKS = [
    ("1", "16 spaces of 63 MiB zeros (evaluate token)", lambda t, s: spaces(t, s, 16), ()),
    ("1", "32 spaces of 63 MiB zeros", lambda t, s: spaces(t, s, 32), ()),
    ("1", "32 spaces of 63 MiB zeros, PUT (admin)", spaces_put, ()),
    ("1", "overlapping zip entries", overlapping, ()),
    ("1", "32 entries sharing one deflate stream", shared_stream, ()),
    ("2", "d = 8192 features (8 MiB) vs a d = 64 reference", wide_features, ()),
    ("2", "d = 4096 statistics vs a d = 64 reference", lambda t, s: wide_stats(t, s, 4096), ()),
    ("3", "8 connections × 1M headers, unauthenticated", header_flood, ()),
    ("3", "one 256 MiB header value", long_header, ()),
    ("4", "2 bodies trickling a byte / 5 s (defaults)", trickle, ()),
    ("5", "fastfid_feature_space of 63 MiB", lambda t, s: metadata(t, s, "fastfid_feature_space", 63), ()),
    ("5", "fastfid_progress of 1 GiB", lambda t, s: metadata(t, s, "fastfid_progress", 1024), ()),
    ("6", "NUL in path, query, reference, feature_space", controls, ()),
    ("7", "idempotency key across two tokens of one name", idempotency, ()),
    ("8", "3 canaries × 10 concurrent runs", canaries, ("--max-running", "8")),
    ("9", "6 concurrent uploads, a quota that fits 1", quotas,
     ("--max-running", "8", "--max-bodies-per-token", "8", "--max-stored-mb", f"{1.5 * state_bytes(D) / 2**20:.9f}")),
    ("10", "a flipped byte keeping size and mtime", readiness, ("--verify-every", "1")),
    ("11", "several spaces, the second fails, then a retry", spaces_transaction, ()),
    ("13", "sign-in form from another site", signin, ()),
    ("13", "feature_space with bidi, of 1 MB", labels, ()),
    ("13", "validation_fd on one space", ignored_valfd, ()),
    ("13", "574 KB of d = 2048 features", features_cost, ()),
    ("13", "(not an attack) an accepted evaluation at d = 2048", accepted_wide, ()),
    ("13", "an archive of 50,000 members", many_members, ()),
    ("13", "unknown-token guesses", token_guesses, ()),
]


def run(url: str | None) -> list[tuple[str, str, str, float, float | None]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        target = Target(Path(folder) / "store", url)
        current, server = None, None
        try:
            for item, name, attack, options in ATTACKS:
                if options != current:
                    if server is not None:
                        server.stop()
                    server, current = target.server(*options).start(), options
                    if send(server, target.admin, "GET", "/references")[1] == []:
                        Service(server.url, target.admin).upload_reference(
                            "golden", stats_of(np.random.default_rng(0), 300, D, space=SPACE))
                CLOCK.start(server.process.pid)
                outcome = attack(target, server)
                seconds, grown = CLOCK.seconds, CLOCK.grown()
                rows.append((item, name, outcome, seconds, grown))
                print(f"  {item:>2} {name}: {outcome} | {seconds * 1000:.0f} ms | +{grown} MiB", flush=True)
        finally:
            if server is not None:
                server.stop()
        # Item 12: several workers keep their shared counters as private as the rest of the store.
        with target.server("--workers", "2") as server:
            send(server, target.admin, "GET", "/references")  # the workers write their counters
            modes = {oct(path.stat().st_mode & 0o777) for counters in target.folder.glob("prometheus-*")
                     for path in [counters, *counters.iterdir()]}
        rows.append(("12", "--workers 2: prometheus-PID/ and its files", f"modes {sorted(modes)}", 0.0, None))
    return rows


def main() -> None:
    print("SQLite")
    tables = {"SQLite": run(None)}
    try:
        with postgres_server() as url:
            print("PostgreSQL")
            tables["PostgreSQL"] = run(url)
    except Unavailable as reason:
        print(f"PostgreSQL skipped: {reason}")
    print("\n| # | attack | " + " | ".join(f"{db}: answer | time | peak RSS" for db in tables) + " |")
    print("|---|---|" + "---|---|---|" * len(tables))
    for index, (item, name, *_) in enumerate(next(iter(tables.values()))):
        cells = []
        for rows in tables.values():
            _, _, outcome, seconds, grown = rows[index]
            cells.append(f"{outcome} | {seconds * 1000:.0f} ms | {'—' if grown is None else f'+{grown:.0f} MiB'}")
        print(f"| {item} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
