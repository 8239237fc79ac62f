"""The service's store on both of its databases: the embedded SQLite file and a real PostgreSQL
server that these tests start (Debian's postgresql package; skipped, with the reason, where none
can start)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")

from fastfid.service.store import CorruptFile, NotFound, Store, blobs, state_bytes  # noqa: E402
from support.postgres import Unavailable, postgres_server  # noqa: E402
from support.service import Server, make_token, run_together, stats_of  # noqa: E402

D = 10


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server of our own on loopback, for this test session."""
    try:
        with postgres_server() as url:
            yield url
    except Unavailable as reason:
        pytest.skip(str(reason))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """(folder, URL or None) of a fresh store on each database."""
    if request.param == "sqlite":
        return tmp_path / "store", None
    url = request.getfixturevalue("postgres_url")
    import sqlalchemy as sa

    from fastfid.service.store import _metadata, database_url

    engine = sa.create_engine(database_url(tmp_path, url))
    _metadata.drop_all(engine)  # each test starts from an empty database
    engine.dispose()
    return tmp_path / "store", url


@pytest.fixture
def store(database):
    store = Store(*database)
    yield store
    store.close()


def test_references_are_versioned_and_content_addressed(store, rng):
    first, second = stats_of(rng, 100, D), stats_of(rng, 120, D)
    v1, created1 = store.add_reference("cifar", first, feature_space="s", uploader="a", fastfid_version="x")
    again, created_again = store.add_reference("cifar", first, feature_space="s", uploader="a", fastfid_version="x")
    v2, _ = store.add_reference("cifar", second, feature_space="s", uploader="b", fastfid_version="x")
    assert (created1, created_again) == (True, False) and again["id"] == v1["id"]
    assert (v1["version"], v2["version"]) == (1, 2) and v2["state_sha256"] == second.state_sha256()
    assert store.reference("cifar")["version"] == 2 and store.reference("cifar", 1)["uploader"] == "a"
    assert [r["version"] for r in store.reference_versions("cifar")] == [1, 2]
    assert [r["version"] for r in store.current_references()] == [2]
    loaded = store.load_stats(v2["state_sha256"], v2["file_sha256"])
    assert loaded.count == 120 and np.array_equal(loaded.comoment, second.comoment)
    with pytest.raises(NotFound, match="no reference 'missing'"):
        store.reference("missing")


def test_a_changed_file_is_detected(store, rng):
    record, _ = store.add_reference("r", stats_of(rng, 50, D), feature_space="s", uploader="a", fastfid_version="x")
    if store.embedded:
        path = store.files / f"{record['state_sha256']}.npz"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte inside the stored arrays
        path.write_bytes(bytes(data))
    else:
        with store.engine.begin() as connection:
            connection.execute(blobs.update().values(data=b"not statistics"))
    with pytest.raises(CorruptFile, match="it changed"):
        store.load_stats(record["state_sha256"], record["file_sha256"])


def evaluation(key: str | None, checkpoint: str = "1") -> dict:
    return dict(idempotency_key=key, model="m", checkpoint=checkpoint, train_seed=None, sample_seed=None,
                reference="r", reference_version=1, reference_sha256="0" * 64, feature_space="s", fid=1.5,
                standard_error=None, interval_low=None, interval_high=None, groups=None, count=10, dim=D,
                input_kind="stats", inputs_sha256=["1" * 64], verdict=None, fastfid_version="x", submitter="t",
                created=time.time())


def test_concurrent_posts_neither_lose_nor_duplicate(store):
    replays = run_together(lambda i: store.add_evaluation(evaluation("same-key")), 8)
    assert len({record["id"] for record, _ in replays}) == 1 and sum(created for _, created in replays) == 1
    distinct = run_together(lambda i: store.add_evaluation(evaluation(f"key-{i}", str(i)))[0]["id"], 16)
    assert len(set(distinct)) == 16
    assert store.count_evaluations() == 17


def test_concurrent_uploads_make_consecutive_versions(store, rng):
    stats = [stats_of(np.random.default_rng(i), 30, D) for i in range(6)]
    run_together(lambda i: store.add_reference("raced", stats[i], feature_space="s", uploader="u",
                                               fastfid_version="x"), 6)
    assert [r["version"] for r in store.reference_versions("raced")] == [1, 2, 3, 4, 5, 6]


def test_one_claimant_per_round_across_hosts(database):
    hosts = [Store(*database) for _ in range(4)]  # four processes or hosts sharing one database
    try:
        claims = run_together(lambda i: hosts[i].claim("canaries", every=3600), 4)
        assert sorted(claims) == [False, False, False, True]
        assert not hosts[0].claim("canaries", every=3600)  # not due again for an hour
    finally:
        for host in hosts:
            host.close()


def test_tokens_are_stored_hashed(store):
    store.add_token("ci", "evaluate", "s3cret-token")
    assert store.token("s3cret-token")["scope"] == "evaluate" and store.token("wrong") is None
    with pytest.raises(ValueError, match="scope must be one of"):
        store.add_token("ci", "write", "x")


def test_two_hosts_serve_one_postgresql_store(postgres_url, tmp_path, rng):
    from fastfid.client import Service

    database = (tmp_path / "token-store", postgres_url)
    import sqlalchemy as sa

    from fastfid.service.store import _metadata, database_url

    engine = sa.create_engine(database_url(tmp_path, postgres_url))
    _metadata.drop_all(engine)
    engine.dispose()
    token = make_token(database[0], "ci", "admin", postgres_url)
    # Two servers with separate local folders: everything they share goes through PostgreSQL.
    with Server(tmp_path / "host-a", "--database", postgres_url) as a, \
            Server(tmp_path / "host-b", "--database", postgres_url) as b:
        Service(a.url, token).upload_reference("golden", stats_of(rng, 300, D))
        posted = Service(b.url, token).evaluate(model="m", checkpoint="1", reference="golden",
                                                stats=stats_of(rng, 200, D, shift=0.1))
        assert Service(a.url, token).evaluation(posted["id"])["fid"] == posted["fid"]
        assert Service(a.url, token).health()["store"] == "postgresql"


def test_new_tokens_never_read_as_an_option():
    # secrets.token_urlsafe alone starts with "-" one time in 64, and `fastfid submit --token -x…`
    # then fails ("expected one argument"): CI met it once.
    from fastfid.service.store import new_token

    tokens = {new_token() for _ in range(500)}
    assert len(tokens) == 500 and all(token.startswith("fastfid_") and len(token) >= 50 for token in tokens)


# --- hostile requests --------------------------------------------------------------------------
_LEAKS = ("select ", "insert ", "traceback", "sqlalchemy", "sqlite3", "psycopg", 'file "', "[sql:")


def _npz_bytes(**arrays) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _zip_flagged(data: bytes, *, flag: int = 0, method: int | None = None) -> bytes:
    """An archive whose members claim encryption (flag bit 0) or an unknown compression method."""
    import struct

    out = bytearray(data)
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = out.find(signature)
        while start >= 0:
            out[start + flag_at:start + flag_at + 2] = struct.pack("<H", flag)
            if method is not None:
                out[start + method_at:start + method_at + 2] = struct.pack("<H", method)
            start = out.find(signature, start + 4)
    return bytes(out)


def _costly_files(rng, good: bytes) -> list[tuple[str, str, bytes]]:
    """(part, what, file) of issue 29's uploads that cost the server more than their bytes: each must
    be refused from its headers, before its arrays are read."""
    from support import hostile

    wide_features = io.BytesIO()
    np.save(wide_features, rng.standard_normal((16, 8192)))  # d = 8192 rows against the d = D reference
    wide = io.BytesIO()  # a dim mismatch of the reference's feature space (8 MiB), read only if unchecked
    np.savez(wide, mu=np.zeros(1024), sigma=np.eye(1024), fastfid_feature_space=np.str_("test-space"))
    return [("stats", "32 spaces of 63 MiB zeros", hostile.spaces_of_zeros(32, 63)),
            ("stats", "overlapping entries", hostile.overlapping_zip()),
            ("stats", "entries sharing one stream", hostile.shared_stream_zip()),
            ("stats", "a 63 MiB feature-space member", hostile.inflated_metadata(good)),
            ("stats", "a 63 MiB progress member", hostile.inflated_metadata(good, "fastfid_progress")),
            ("stats", "2,000 members", hostile.many_members(2000)),
            ("stats", "d = 1024 statistics", wide.getvalue()),
            ("features", "d = 8192 features", wide_features.getvalue()),
            ("shard", "32 spaces of 63 MiB zeros", hostile.spaces_of_zeros(32, 63))]


def _hostile_requests(rng, good: bytes, features: bytes, costly: list):
    """(method, path, headers, body) of malformed requests, each with at least one defect."""
    from fastfid.client import _multipart

    def pick(options):
        return options[int(rng.integers(len(options)))]

    huge = ["99999999999999999999999", str(2**63), str(-(2**63) - 1), "2147483648", "-1", "0", "1e9", "nan", "abc",
            "", "%00", "1;DROP TABLE evaluations", "'", "\u202e1", "0x10", " 7", "٣"]
    names = ["a/b", "tab\there", "\x1b[31mred", "\u202eevil", "", "x" * 201, "nul\x00byte", "line\nbreak"]
    bad_files = [b"", b"not a zip at all", good[: len(good) // 2], _zip_flagged(good, flag=1),
                 _zip_flagged(good, method=99), _npz_bytes(mu=np.zeros(4), sigma=np.eye(4), fastfid_count=np.uint64(2**64 - 1)),
                 _npz_bytes(mu=np.zeros(3), sigma=np.eye(4)), _npz_bytes(mu=np.full(D, np.nan), sigma=np.eye(D)),
                 _npz_bytes(sigma=np.eye(D)), _npz_bytes(mu=np.zeros((D, 2)), sigma=np.eye(D)),
                 _npz_bytes(mu=np.array(["a"] * D), sigma=np.eye(D)), features[:40], b"\x93NUMPY garbage"]
    fields = {"model": "fuzz", "checkpoint": "1", "reference": "golden"}
    for index in range(585):
        kind = index % 9
        headers: dict = {}
        body = b""
        if kind == 0:  # integers where the database has ranges (0 and below are no ids either)
            number = pick([v for v in huge if v])
            method, path = pick([("GET", f"/evaluations/{number}"), ("GET", f"/evaluations?limit={number}"),
                                 ("GET", f"/references/golden?version={number}"),
                                 ("GET", f"/evaluations?model={pick(names)}&limit={number}")])
        elif kind == 1:  # paths that are not routes, or routes with other methods
            method = pick(["GET", "POST", "PUT", "DELETE", "PATCH"])
            path = pick(["/nowhere", "/references/golden/versions/x", "/evaluations/1/x", "/../etc/passwd",
                         "/models", "/models/fuzz/history/extra", "/%2e%2e/%2e%2e", "/canaries/x/run/y",
                         "/references/" + "x" * 300]) if method == "GET" else pick(
                         ["/healthz", "/alerts", "/models/x", "/evaluations/1"])
        elif kind == 2:  # evaluation forms with a bad field
            not_seeds = [v for v in huge if v not in ("", "0", "-1", "2147483648")]  # those are seeds
            extra = pick([{"train_seed": pick(not_seeds)}, {"sample_seed": pick(not_seeds)},
                          {"reference_version": pick([v for v in huge if v])},
                          {"model": pick(names)}, {"checkpoint": pick(names[1:])}, {"reference": ""},
                          {"baseline": "\x00"}, {"model": None}])
            body, content_type = _multipart({**fields, **extra}, [("stats", "s.npz", good)])
            method, path, headers = "POST", "/evaluations", {"Content-Type": content_type}
        elif kind == 3:  # a bad statistics or features file
            part = pick(["stats", "shard", "features"])
            body, content_type = _multipart(fields, [(part, "f", pick(bad_files))])
            method, path, headers = "POST", "/evaluations", {"Content-Type": content_type}
        elif kind == 4:  # a bad reference upload
            body, content_type = _multipart({"feature_space": "fuzz-space"}, [(pick(["stats", "features"]), "f",
                                                                             pick(bad_files))])
            method, path, headers = "PUT", f"/references/{pick(['fuzzed', 'a%2Fb', 'x' * 250, '%1b'])}", \
                {"Content-Type": content_type}
        elif kind == 5:  # broken envelopes
            method, path = "POST", "/evaluations"
            headers = {"Content-Type": pick(["multipart/form-data", "multipart/form-data; boundary=", "text/plain",
                                             "application/json", "multipart/form-data; boundary=zz"])}
            body = pick([b"", b"--zz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx", b"{}", rng.bytes(300)])
        elif kind == 6:  # headers
            body, content_type = _multipart(fields, [("stats", "s.npz", pick(bad_files[1:]))])
            method, path = "POST", "/evaluations"
            headers = {"Content-Type": content_type,
                       "Idempotency-Key": pick(["k" * 300, "tab\tkey", "\u202ekey", "é" * 10])}
        elif kind == 8:  # uploads that cost more than their bytes, to evaluate or as references
            part, _, data = pick(costly)
            if pick([True, False]):
                body, content_type = _multipart(fields, [(part, "f.npz", data)])
                method, path = "POST", "/evaluations"
            else:
                body, content_type = _multipart({}, [("stats" if part == "shard" else part, "f.npz", data)])
                method, path = "PUT", "/references/costly"
            headers = {"Content-Type": content_type}
        else:  # bad canaries
            body, content_type = _multipart({"reference": pick(["golden", "", "missing"]), "low": pick(huge),
                                             "high": pick(["1", "inf", "-inf", "nan", "x"])},
                                            [("stats", "s.npz", pick([good] + bad_files))])
            method, path, headers = "PUT", f"/canaries/{pick(['fuzz', 'a%2Fb', 'x' * 250])}", \
                {"Content-Type": content_type}
        yield method, path, headers, body


def test_hostile_requests_get_json_4xx_that_leak_nothing_change_nothing_and_cost_little(database, tmp_path):
    """Issue 29's attacks among 585 malformed requests, while two bodies trickle and eight clients
    flood headers: each answer is a JSON 4xx without internals, none waits on a slow body, the
    server's peak memory stays near its start, and nothing is stored; then concurrent canary runs
    alert once and concurrent uploads fill the quota exactly."""
    import http.client
    import json
    from urllib.parse import quote

    from fastfid.client import Service, ServiceError
    from support import hostile

    folder, url = database
    token = make_token(folder, "fuzzer", "admin", url)
    trickler, filler = make_token(folder, "trickler", "evaluate", url), make_token(folder, "filler", "admin", url)
    options = ("--database", url) if url else ()
    rng = np.random.default_rng(2026)
    reference = stats_of(rng, 300, D)
    reference.save(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    np.save(tmp_path / "few.npy", rng.standard_normal((3, D)))
    costly = _costly_files(rng, good)
    quota = 2.5 * state_bytes(D) / 2**20  # the golden reference and one canary; then two more states
    with Server(folder, *options, "--max-running", "2", "--max-bodies-per-token", "8",
                "--max-stored-mb", f"{quota:.9f}") as server:
        client = Service(server.url, token)
        client.upload_reference("golden", reference)
        before = (len(client.evaluations()), client.reference("golden")["version"])
        start_rss = hostile.peak_rss(server.process.pid)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        seen, slowest = 0, 0.0
        with hostile.Trickle(server.port, trickler, connections=2, every=1.0):  # as many as work slots
            for index, (method, path, headers, body) in enumerate(
                    _hostile_requests(rng, good, (tmp_path / "few.npy").read_bytes(), costly)):
                if index == 100:
                    answers = hostile.header_flood(server.port, connections=8, headers=200_000)
                    assert all(a.startswith(b"HTTP/1.1 431") or a == b"" for a in answers), answers
                    assert any(a.startswith(b"HTTP/1.1 431") for a in answers), answers
                path = quote(path, safe="/?=&%;:'@")  # what a client puts on the wire
                raw = {name: value.encode() for name, value in {"Authorization": f"Bearer {token}", **headers}.items()}
                started = time.monotonic()
                try:
                    connection.request(method, path, body=body, headers=raw)
                    response = connection.getresponse()
                    status, text = response.status, response.read().decode("utf-8", "replace")
                except (http.client.HTTPException, OSError):
                    connection.close()  # the server may close a connection it refused; open another
                    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                    continue
                slowest = max(slowest, time.monotonic() - started)
                seen += 1
                assert 400 <= status < 500, (method, path, headers, body[:400], status, text[:300])
                assert "error" in json.loads(text), text[:300]
                assert not any(leak in text.lower() for leak in _LEAKS), (path, text[:300])
        connection.close()
        # A request waiting on a slot held by a trickled body would wait for --body-deadline (600 s);
        # the slowest here receives and refuses a 2 MB upload (well under a second on CI's machine).
        assert slowest < 10, f"a request took {slowest:.1f} s"
        grown = hostile.peak_rss(server.process.pid) - start_rss if start_rss else 0
        # Any one of the costly uploads read whole costs 63 MiB (a metadata member) to 2 GB (the spaces).
        assert grown < 48 << 20, f"the server's peak memory grew {grown >> 20} MiB"
        after = (len(client.evaluations()), client.reference("golden")["version"])
        assert seen >= 550 and after == before
        assert not any(c["name"] in ("fuzz", "costly") for c in client._request("GET", "/canaries"))
        assert "costly" not in {r["name"] for r in client._request("GET", "/references")}

        # Concurrent runs of a canary out of its band raise one alert.
        client.set_canary("far", stats_of(rng, 300, D, shift=3.0), reference="golden", low=0.0, high=1e-3)
        run_together(lambda _: client.run_canary("far"), 10)
        assert len(client.alerts("far")) == 1
        # Six concurrent uploads of another token, when its quota fits two, store two.
        uploader = Service(server.url, filler, retries=0)
        outcomes = run_together(lambda i: _status_of(lambda: uploader.upload_reference(
            f"fill-{i}", stats_of(np.random.default_rng(i), 100, D)), ServiceError), 6)
        assert sorted(outcomes) == [201, 201, 413, 413, 413, 413], outcomes


def _status_of(call, error_type) -> int:
    try:
        call()
        return 201
    except error_type as error:
        return error.status


def test_concurrent_runs_of_a_canary_raise_each_alert_once(store, rng):

    from fastfid.service.canaries import Alerts, run_canary
    from fastfid.service.evaluation import ReferenceCache

    reference = stats_of(rng, 300, D)
    record, _ = store.add_reference("golden", reference, feature_space="s", uploader="a", fastfid_version="x")
    far = stats_of(rng, 300, D, shift=3.0)
    state, file_hash = store.put_stats(far)
    store.put_canary(dict(name="far", reference="golden", reference_sha256=record["state_sha256"], stats_sha256=state,
                          stats_file_sha256=file_hash, low=0.0, high=1e-3, created=0.0))  # out of band at every run
    alerts, cache = Alerts(store), ReferenceCache(store)
    start = threading.Barrier(10)
    outcomes = []

    def run():
        start.wait()
        outcomes.append(run_canary(store, cache, alerts, "far"))

    threads = [threading.Thread(target=run) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [o["status"] for o in outcomes] == ["alert"] * 10
    assert len(store.all_alerts("far")) == 1 == sum(len(o["alerts"]) for o in outcomes)
    assert store.canary("far")["last_status"] == "out_of_band"


def test_an_evaluation_of_several_spaces_is_stored_whole_or_not_at_all(database, tmp_path, rng):
    import fastfid
    from fastfid.client import Service

    folder, url = database
    token = make_token(folder, "ci", "admin", url)
    options = ("--database", url) if url else ()
    with Server(folder, *options) as server:
        client = Service(server.url, token)
        for space in ("a", "b"):
            client.upload_reference(f"multi.{space}", stats_of(rng, 300, D, space=space))
        # Space b holds one sample: its FID fails after space a's was computed.
        broken = fastfid.SpaceStats({"a": stats_of(rng, 50, D, space="a"), "b": stats_of(rng, 1, D, space="b")})
        broken.save(tmp_path / "broken.npz")
        fixed = fastfid.SpaceStats({"a": stats_of(rng, 50, D, space="a"), "b": stats_of(rng, 50, D, space="b")})
        fixed.save(tmp_path / "fixed.npz")

        def post(path):
            from fastfid.client import _multipart

            body, content_type = _multipart({"model": "m", "checkpoint": "1", "reference": "multi"},
                                            [("stats", path.name, path.read_bytes())])
            return urllib_post(server.url, token, body, content_type, "key-1")

        status, answer = post(tmp_path / "broken.npz")
        assert status == 422 and "at least 2 samples" in answer["error"]
        assert client.evaluations(model="m") == []  # space a's record was not kept
        status, answer = post(tmp_path / "fixed.npz")  # the corrected retry, with the same key, is a new post
        assert status == 201 and set(answer["spaces"]) == {"a", "b"}
        assert len(client.evaluations(model="m")) == 2


def urllib_post(base: str, token: str, body: bytes, content_type: str, key: str) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(base + "/evaluations", data=body, method="POST", headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token}", "Idempotency-Key": key})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_concurrent_uploads_cannot_pass_a_quota_together_and_canaries_count(database, tmp_path, rng):

    from fastfid.client import Service, ServiceError

    folder, url = database
    token = make_token(folder, "ci", "admin", url)
    options = ("--database", url) if url else ()
    one = state_bytes(D)  # the quota fits one state, not two
    with Server(folder, *options, "--max-stored-mb", f"{1.5 * one / 2**20:.9f}", "--max-running", "8",
                "--max-bodies-per-token", "8") as server:
        client = Service(server.url, token, retries=0)
        uploads = [stats_of(np.random.default_rng(i), 100, D) for i in range(6)]
        start, outcomes = threading.Barrier(6), []

        def upload(index):
            start.wait()
            try:
                outcomes.append(client.upload_reference(f"race-{index}", uploads[index])["version"])
            except ServiceError as error:
                outcomes.append(error.status)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == [1] + [413] * 5, outcomes
        # A canary's statistics count too: the token has no room left for them.
        stored = [name for name in (f"race-{i}" for i in range(6)) if _has_reference(client, name)]
        with pytest.raises(ServiceError, match="quota") as refused:
            client.set_canary("over", stats_of(rng, 100, D), reference=stored[0], low=0, high=1e9)
        assert refused.value.status == 413


def _has_reference(client, name: str) -> bool:
    from fastfid.client import ServiceError

    try:
        client.reference(name)
        return True
    except ServiceError:
        return False


def test_a_store_made_before_canaries_had_an_uploader_gains_the_column(database, rng):
    import sqlalchemy as sa

    from fastfid.service.store import canaries, database_url

    folder, url = database
    folder.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(database_url(folder, url))
    old = sa.MetaData()
    sa.Table("canaries", old, *[sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                                for c in canaries.columns if c.name != "uploader"])
    old.create_all(engine)
    engine.dispose()
    store = Store(*database)
    try:
        assert "uploader" in {c["name"] for c in sa.inspect(store.engine).get_columns("canaries")}
        record, _ = store.add_reference("golden", stats_of(rng, 100, D), feature_space="s", uploader="a",
                                        fastfid_version="x")
        state, file_hash = store.put_stats(stats_of(rng, 100, D))
        canary = store.put_canary(dict(name="c", reference="golden", reference_sha256=record["state_sha256"],
                                       stats_sha256=state, stats_file_sha256=file_hash, low=0.0, high=1.0, created=0.0,
                                       uploader="a"))
        assert canary["uploader"] == "a" and store.stored_bytes_of("a") == 2 * state_bytes(D)
    finally:
        store.close()
