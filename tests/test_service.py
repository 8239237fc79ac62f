"""The evaluation service end to end: a real `fastfid serve` process on loopback, driven by
fastfid.client.Service and raw HTTP, its numbers checked against fastfid's functions called
directly (whose own accuracy tests/test_distance.py checks against scipy)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import fastfid  # noqa: E402
from fastfid.client import Service, ServiceError  # noqa: E402
from fastfid.uncertainty import compare, fid_with_error, split_into_shards  # noqa: E402
from support.hostile import answer_of, response_of  # noqa: E402
from support.service import Server, Webhook, features, make_token, saved, stats_of, wait_for  # noqa: E402

D = 24
SPACE = "test-space"
# Evaluations go through the same float64 code as these direct calls; what differs is the order of
# a few O(d²) sums (the file round trip is exact), so 1e-9 relative is ample and still catches a
# wrong reference, a wrong side or a lost sample.
RTOL = 1e-9


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    store = tmp_path_factory.mktemp("service") / "store"
    write, read = make_token(store, "ci-writer", "admin"), make_token(store, "ci-reader", "read")
    with Server(store) as server:
        rng = np.random.default_rng(7)
        reference = stats_of(rng, 3000, D)
        writer = Service(server.url, write)
        writer.upload_reference("golden", reference)
        yield dict(server=server, writer=writer, reader=Service(server.url, read), reference=reference,
                   write_token=write, store=store)


def stored_count(service) -> int:
    return len(service["writer"].evaluations())


def test_reference_versions_are_content_addressed_and_kept(service, tmp_path, rng):
    writer = service["writer"]
    first = writer.upload_reference("versions", stats_of(rng, 200, D))
    stats = stats_of(rng, 300, D)
    second = writer.upload_reference("versions", stats)
    same = writer.upload_reference("versions", saved(stats, tmp_path / "same.npz"))  # the same state, as a file
    assert (first["version"], second["version"], same["version"]) == (1, 2, 2)
    assert same["state_sha256"] == second["state_sha256"] == stats.state_sha256()
    assert second["uploader"] == "ci-writer" and second["count"] == 300 and second["dim"] == D
    assert service["reader"].reference("versions")["version"] == 2
    assert service["reader"].reference("versions", version=1)["state_sha256"] == first["state_sha256"]


def test_peer_files_and_features_as_references(service, tmp_path, rng):
    writer = service["writer"]
    x = features(rng, 500, D)
    mu, sigma = x.mean(axis=0), np.cov(x, rowvar=False)
    np.savez(tmp_path / "pytorch_fid.npz", mu=mu, sigma=sigma)  # pytorch-fid's and clean-fid's layout
    with pytest.raises(ServiceError, match="name no feature space") as refused:
        writer.upload_reference("peer", tmp_path / "pytorch_fid.npz")
    assert refused.value.status == 422
    peer = writer.upload_reference("peer", tmp_path / "pytorch_fid.npz", feature_space=SPACE)
    assert peer["count"] is None and peer["dim"] == D
    np.save(tmp_path / "features.npy", x)
    from_features = writer.upload_reference("from-features", features=tmp_path / "features.npy", feature_space=SPACE)
    assert from_features["count"] == 500
    generated = stats_of(rng, 400, D, shift=0.1)
    both = [writer.evaluate(model="peer-check", checkpoint="1", reference=name, stats=generated)["fid"]
            for name in ("peer", "from-features")]
    expected = fastfid.frechet_distance(generated.mean, generated.cov, mu, sigma)
    np.testing.assert_allclose(both, [expected, expected], rtol=RTOL)


def test_evaluation_of_statistics(service, rng):
    generated = stats_of(rng, 800, D, shift=0.05)
    result = service["writer"].evaluate(model="stats-model", checkpoint="1000", reference="golden", stats=generated)
    np.testing.assert_allclose(result["fid"], fastfid.fid(generated, service["reference"]), rtol=RTOL)
    assert result["standard_error"] is None and result["verdict"] is None and not result["replayed"]
    assert result["reference_sha256"] == service["reference"].state_sha256()
    assert result["feature_space"] == SPACE and result["count"] == 800 and result["submitter"] == "ci-writer"
    assert result["fastfid_version"] == fastfid.__version__ and len(result["inputs_sha256"][0]) == 64
    assert service["reader"].evaluation(result["id"])["fid"] == result["fid"]


def test_shards_and_features_give_the_jackknife_error_bar(service, rng):
    x = features(rng, 1200, D, shift=0.05)
    shards = split_into_shards(x, 6, seed=None)
    posted = service["writer"].evaluate(model="shards", checkpoint="1", reference="golden", shards=shards,
                                        feature_space=SPACE)
    expected = fid_with_error(shards, service["reference"])
    np.testing.assert_allclose([posted["fid"], posted["standard_error"], posted["interval_low"]],
                               [expected.value, expected.standard_error, expected.interval[0]], rtol=RTOL)
    assert posted["groups"] == 6 and posted["count"] == 1200 and len(posted["inputs_sha256"]) == 6
    posted = service["writer"].evaluate(model="features", checkpoint="1", reference="golden", features=x,
                                        feature_space=SPACE)
    expected = fid_with_error(x, service["reference"], groups=20)
    np.testing.assert_allclose([posted["fid"], posted["standard_error"]], [expected.value, expected.standard_error],
                               rtol=RTOL)


def test_verdicts_against_the_previous_checkpoint_and_a_baseline(service, rng):
    writer = service["writer"]
    fids: dict[str, list[float]] = {"1": [], "2": []}
    for checkpoint, shift in (("1", 0.3), ("2", 0.05)):
        for seed in range(3):
            generated = stats_of(np.random.default_rng(100 * seed + len(checkpoint)), 2000, D, shift=shift)
            result = writer.evaluate(model="panel", checkpoint=checkpoint, reference="golden", stats=generated,
                                     train_seed=seed, sample_seed=0)
            fids[checkpoint].append(result["fid"])
    verdict = result["verdict"]
    expected = compare(fids["1"], fids["2"])  # A = previous, B = current
    assert expected.verdict == "B better" and verdict["verdict"] == "better" and verdict["method"] == "seed panels"
    assert verdict["against"] == {"model": "panel", "checkpoint": "1"}
    np.testing.assert_allclose(verdict["gap"], -expected.gap, rtol=1e-12)
    # A single evaluation with error bars on both sides: the normal interval of the two jackknife SEs.
    x = features(rng, 2000, D, shift=0.3)
    first = writer.evaluate(model="bars", checkpoint="1", reference="golden", features=x, feature_space=SPACE)
    second = writer.evaluate(model="bars", checkpoint="2", reference="golden", features=x[:1000],
                             feature_space=SPACE, baseline="bars@1")
    gap = second["fid"] - first["fid"]
    half = 1.959963984540054 * np.hypot(first["standard_error"], second["standard_error"])
    assert second["verdict"]["method"] == "error bars"
    np.testing.assert_allclose(second["verdict"]["interval"], [gap - half, gap + half], rtol=1e-12)
    assert second["verdict"]["verdict"] == ("inconclusive" if abs(gap) <= half else "worse" if gap > 0 else "better")
    with pytest.raises(ServiceError, match="baseline 'nobody' has no evaluations") as missing:
        writer.evaluate(model="bars", checkpoint="3", reference="golden", features=x, feature_space=SPACE,
                        baseline="nobody")
    assert missing.value.status == 404


def test_history_as_json_csv_and_page(service, rng):
    writer = service["writer"]
    for checkpoint in ("100", "200", "300"):
        writer.evaluate(model="history", checkpoint=checkpoint, reference="golden",
                        shards=split_into_shards(features(rng, 600, D, shift=0.1), 4), feature_space=SPACE)
    history = service["reader"].history("history")
    assert [p["checkpoint"] for p in history["checkpoints"]] == ["100", "200", "300"]
    assert all(p["low"] < p["fid"] < p["high"] and p["error_bar"] == "jackknife" for p in history["checkpoints"])
    csv = get(service, "/models/history/history?format=csv", service["write_token"]).decode()
    assert csv.splitlines()[0].startswith("checkpoint,fid,low,high") and len(csv.splitlines()) == 4
    page = get(service, "/models/history", service["write_token"]).decode()
    assert "<svg" in page and "FID of history against golden" in page and "polyline" in page
    assert 'href="/models/history/history?reference=golden&amp;format=csv"' in page  # the page's own data


def exchange(service, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None):
    """One request, redirects not followed: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", service["server"].port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def test_a_browser_signs_in_with_a_read_token_and_the_cookie_only_reads(service, rng):
    from urllib.parse import urlencode

    writer = service["writer"]
    writer.evaluate(model="browsed", checkpoint="1k", reference="golden", feature_space=SPACE,
                    shards=split_into_shards(features(rng, 600, D, shift=0.1), 4))
    read = make_token(service["store"], "browser", "read")
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    def sign_in(token: str, wanted: str = "/models/browsed"):
        return exchange(service, "POST", "/signin", body=urlencode({"token": token, "next": wanted}).encode(), headers=form)

    # Without a token, a page offers the sign-in form (coming back to it); the API answers JSON.
    status, _, page = exchange(service, "GET", "/models/browsed?reference=golden")
    assert status == 401 and b'action="/signin"' in page
    assert b'name="next" value="/models/browsed?reference=golden"' in page
    status, _, body = exchange(service, "GET", "/evaluations")
    assert status == 401 and "missing token" in json.loads(body)["error"]
    # Unknown tokens and write tokens are refused: a browser never holds the right to write.
    assert sign_in("nonsense")[0] == 401 and b"unknown token" in sign_in("nonsense")[2]
    status, headers, page = sign_in(service["write_token"])
    assert status == 401 and b"admin scope" in page and headers.get("set-cookie") is None
    assert exchange(service, "POST", "/signin", body=b"token=" + b"x" * 5000, headers=form)[0] == 413
    # A read token sets an HttpOnly, SameSite=Strict cookie and goes back to the page, on this server only.
    status, headers, _ = sign_in(read)
    cookie = headers["set-cookie"]
    assert status == 303 and headers["location"] == "/models/browsed"
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; behind TLS the flag is set
    assert sign_in(read, "//elsewhere.example/x")[1]["location"] == "/"
    jar = {"Cookie": cookie.split(";")[0]}
    status, _, page = exchange(service, "GET", "/models/browsed", headers=jar)
    assert status == 200 and b"FID of browsed against golden" in page and b"Sign out" in page
    status, _, page = exchange(service, "GET", "/", headers=jar)
    assert status == 200 and b'href="/models/browsed?reference=golden"' in page and b"golden" in page
    assert exchange(service, "GET", "/evaluations?model=browsed", headers=jar)[0] == 200
    # The cookie never writes: the same request with the bearer header would.
    status, _, body = exchange(service, "PUT", "/references/by-cookie", body=b"", headers=jar)
    assert status == 401 and "missing token" in json.loads(body)["error"]
    status, headers, _ = exchange(service, "POST", "/signout", headers=jar)
    assert status == 303 and headers["location"] == "/signin" and "fastfid_read=" in headers["set-cookie"]


def test_the_history_page_explains_its_bars_with_round_ticks_and_seconds(service, rng):
    writer = service["writer"]
    for checkpoint, repeats in (("a", 3), ("b", 1)):
        for _ in range(repeats):
            writer.evaluate(model="explained", checkpoint=checkpoint, reference="golden", feature_space=SPACE,
                            shards=split_into_shards(features(rng, 600, D, shift=0.1), 4))
    page = get(service, "/models/explained", service["write_token"]).decode()
    assert "95 % interval of the checkpoint&#x27;s mean over its evaluations (t with n − 1 degrees of freedom)" in page
    assert "its jackknife 95 % half-width" in page
    import re

    ticks = [float(t) for t in re.findall(r'text-anchor="end">([-0-9.]+)</text>', page)]
    steps = np.diff(ticks)
    assert len(ticks) >= 3 and np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))  # round steps
    assert all(np.isclose(t / steps[0], round(t / steps[0])) for t in ticks)  # at multiples of the step
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>", page)  # to the second
    frame = re.search(r'<rect x="(\d+)" y="\d+" width="(\d+)"', page)
    left, right = int(frame[1]), int(frame[1]) + int(frame[2])
    xs = [float(x) for x in re.findall(r'<line x1="([0-9.]+)" y1="[0-9.]+" x2="[0-9.]+" y2="[0-9.]+" stroke="#777"', page)]
    assert xs and all(left < x < right for x in xs)  # whiskers inside the frame


def post_form(service, fields: dict, stats, headers: dict | None = None):
    """A raw evaluation post: (status, headers, JSON body)."""
    from fastfid.client import _multipart, _stats_part

    body, content_type = _multipart(fields, [_stats_part("stats", stats)])
    status, answer_headers, answer = exchange(service, "POST", "/evaluations", body=body, headers={
        "Content-Type": content_type, "Authorization": f"Bearer {service['write_token']}", **(headers or {})})
    return status, answer_headers, json.loads(answer)


def test_out_of_range_numbers_bad_names_and_keys_are_422s_that_name_the_field(service, rng):
    before = stored_count(service)
    bearer = {"Authorization": f"Bearer {service['write_token']}"}
    # Each would have reached the database (OverflowError on SQLite, DataError on PostgreSQL).
    for path, field in (("/evaluations/99999999999999999999999", "evaluation id"),
                        ("/evaluations/2147483648", "evaluation id"), ("/evaluations?limit=9223372036854775808", "limit"),
                        ("/references/golden?version=9223372036854775808", "version")):
        status, headers, body = exchange(service, "GET", path, headers=bearer)
        assert status == 422 and field in json.loads(body)["error"] and headers["x-request-id"], (path, body)
    fields = {"model": "edge", "checkpoint": "1", "reference": "golden", "feature_space": SPACE}
    stats = stats_of(rng, 50, D)
    for extra, named in (({"train_seed": str(2**63)}, "train_seed"), ({"sample_seed": str(-(2**63) - 1)}, "sample_seed"),
                         ({"reference_version": str(2**63)}, "reference_version"),
                         ({"model": "a/b"}, "model"), ({"model": "tab\there"}, "model"),
                         ({"model": "\x1b[31mred"}, "model"), ({"checkpoint": "\u202eevil"}, "checkpoint")):
        status, _, body = post_form(service, {**fields, **extra}, stats)
        assert status == 422 and named in body["error"], (extra, body)
    status, _, body = post_form(service, fields, stats, headers={"Idempotency-Key": "k" * 300})
    assert status == 422 and "Idempotency-Key" in body["error"]
    assert stored_count(service) == before
    # A checkpoint may hold '/': it is never a path segment.
    status, _, body = post_form(service, {**fields, "checkpoint": "run/step-100"}, stats)
    assert status == 201 and body["checkpoint"] == "run/step-100"


def test_work_is_bounded_by_what_a_request_carries_before_anything_is_read(service, tmp_path, rng):
    import io as bytes_io
    import time

    from fastfid.client import _multipart

    def upload(method: str, path: str, part: str, data: bytes, fields: dict | None = None):
        body, content_type = _multipart(fields or {}, [(part, "x", data)])
        started = time.monotonic()
        status, _, answer = exchange(service, method, path, body=body, headers={
            "Content-Type": content_type, "Authorization": f"Bearer {service['write_token']}"})
        return status, json.loads(answer)["error"], time.monotonic() - started

    files_before = sorted((service["store"] / "statistics").iterdir())
    evaluations_before = stored_count(service)
    # 66 KB of features declaring an 8192 × 8192 state (512 MiB): refused from the header, at once.
    tiny = bytes_io.BytesIO()
    np.save(tiny, np.ones((2, 8192), np.float32))
    status, error, seconds = upload("PUT", "/references/huge", "features", tiny.getvalue(), {"feature_space": SPACE})
    assert status == 413 and "64×" in error and seconds < 1.0, (error, seconds)
    # A compressed .npz declaring mu (8192) and sigma (8192²) in ~0.5 MB: not unpacked.
    packed = bytes_io.BytesIO()
    np.savez_compressed(packed, mu=np.zeros(8192), sigma=np.eye(8192))
    status, error, seconds = upload("POST", "/evaluations", "stats", packed.getvalue(),
                                    {"model": "m", "checkpoint": "1", "reference": "golden"})
    assert status in (413, 422) and seconds < 1.0, (error, seconds)
    # Beyond --max-dim (16384 by default).
    wide = bytes_io.BytesIO()
    np.save(wide, np.ones((1, 16385), np.float32))
    status, error, _ = upload("PUT", "/references/wide", "features", wide.getvalue())
    assert status == 413 and "--max-dim" in error
    # A .npy whose header declares more rows than it holds is truncated, not read.
    short = bytes_io.BytesIO()
    np.save(short, rng.standard_normal((500, D)))
    status, error, _ = upload("PUT", "/references/short", "features", short.getvalue()[:-800], {"feature_space": SPACE})
    assert status == 400 and "truncated" in error
    # A submission's dim is compared with its reference's before its arrays are read.
    other_dim = saved(stats_of(rng, 300, D + 1), tmp_path / "other_dim.npz")
    status, error, _ = upload("POST", "/evaluations", "stats", other_dim.read_bytes(),
                              {"model": "m", "checkpoint": "1", "reference": "golden"})
    assert status == 422 and f"dim {D + 1}" in error and f"dim {D}" in error
    assert sorted((service["store"] / "statistics").iterdir()) == files_before  # nothing written
    assert stored_count(service) == evaluations_before


def test_a_reference_no_evaluation_could_use_is_refused_at_upload(service, tmp_path, rng):
    writer = service["writer"]
    good = stats_of(rng, 500, D)
    cases = {
        "not positive semidefinite": (good.mean, good.cov - 5 * np.eye(D)),
        "values beyond 1e308": (good.mean, 1e308 * np.eye(D)),
        "too large for float64": (np.full(D, 1e200), good.cov),
        "NaN": (np.where(np.arange(D) == 3, np.nan, good.mean), good.cov),
    }
    for problem, (mu, sigma) in cases.items():
        path = tmp_path / "bad.npz"
        np.savez(path, mu=mu, sigma=sigma)  # a pytorch-fid file: no sample count, no check of its own
        with pytest.raises(ServiceError, match="422") as refused:
            writer.upload_reference("unusable", path, feature_space=SPACE)
        assert problem in str(refused.value), (problem, refused.value)
    with pytest.raises(ServiceError, match="1 sample"):
        writer.upload_reference("unusable", stats_of(rng, 1, D))
    with pytest.raises(ServiceError, match="404"):
        service["reader"].reference("unusable")  # nothing was stored, so nothing became current


def test_idempotency_keys_belong_to_their_token_and_a_reused_key_is_a_409(service, rng):
    url, first = service["server"].url, service["write_token"]
    second = make_token(service["store"], "other-ci", "admin")
    stats, other = stats_of(rng, 100, D), stats_of(rng, 100, D)
    mine = post_raw(url, first, stats, model="keys", checkpoint="1", key="build-7")
    theirs = post_raw(url, second, other, model="keys", checkpoint="2", key="build-7")  # the same key elsewhere
    assert not mine["replayed"] and not theirs["replayed"] and theirs["id"] != mine["id"]
    assert mine["idempotency_key"] == theirs["idempotency_key"] == "build-7"  # as the clients sent it
    again = post_raw(url, first, stats, model="keys", checkpoint="1", key="build-7")
    assert again["replayed"] and again["id"] == mine["id"]
    before = stored_count(service)
    for changed_stats, checkpoint in ((other, "1"), (stats, "3")):
        status, _, refused = post_form(service, {"model": "keys", "checkpoint": checkpoint, "reference": "golden"},
                                       changed_stats, headers={"Idempotency-Key": "build-7"})
        assert status == 409 and f"evaluation {mine['id']}" in refused["error"], refused
    assert stored_count(service) == before
    # Two tokens of one name are two tokens: neither replays the other's key.
    twin_a, twin_b = (make_token(service["store"], "twin", "evaluate") for _ in range(2))
    a = post_raw(url, twin_a, stats, model="keys", checkpoint="5", key="build-8")
    b = post_raw(url, twin_b, other, model="keys", checkpoint="6", key="build-8")
    assert not a["replayed"] and not b["replayed"] and a["id"] != b["id"] and a["submitter"] == b["submitter"]


def test_scopes_evaluate_cannot_replace_references_or_rebanding_canaries(service, rng):
    evaluator = Service(service["server"].url, make_token(service["store"], "ci-job", "evaluate"))
    record = evaluator.evaluate(model="scoped", checkpoint="1", reference="golden", stats=stats_of(rng, 100, D),
                                feature_space=SPACE)
    assert record["submitter"] == "ci-job" and evaluator.evaluation(record["id"])["id"] == record["id"]
    for attempt in (lambda: evaluator.upload_reference("golden", stats_of(rng, 100, D)),
                    lambda: evaluator.set_canary("silenced", stats_of(rng, 100, D), reference="golden", low=0, high=1e9)):
        with pytest.raises(ServiceError, match="has the evaluate scope; this needs a token of the admin scope") as refused:
            attempt()
        assert refused.value.status == 403
    assert service["reader"].reference("golden")["version"] == 1  # unchanged


def test_evaluations_come_in_pages_with_a_cursor(service, rng):
    import re

    writer = service["writer"]
    posted = [writer.evaluate(model="paged", checkpoint=str(i), reference="golden", stats=stats_of(rng, 50, D),
                              feature_space=SPACE)["id"] for i in range(5)]
    bearer = {"Authorization": f"Bearer {service['write_token']}"}
    path, seen = "/evaluations?model=paged&limit=2", []
    while path:
        status, headers, body = exchange(service, "GET", path, headers=bearer)
        assert status == 200
        seen.append([row["id"] for row in json.loads(body)])
        link = headers.get("link")
        path = re.fullmatch(r'<([^>]+)>; rel="next"', link)[1] if link else None
    assert seen == [posted[0:2], posted[2:4], posted[4:5]]
    status, _, body = exchange(service, "GET", "/evaluations?limit=1001", headers=bearer)
    assert status == 422 and "limit must be an integer in 1 … 1000" in json.loads(body)["error"]
    status, _, body = exchange(service, "GET", "/evaluations", headers=bearer)  # no limit: the first 100
    assert status == 200 and len(json.loads(body)) == min(100, stored_count(service))
    assert [r["id"] for r in service["reader"].evaluations(model="paged")] == posted  # the client follows pages
    assert [r["id"] for r in service["reader"].evaluations(model="paged", limit=3)] == posted[:3]


def test_quotas_per_token_on_requests_and_stored_bytes(tmp_path, rng):
    store = tmp_path / "store"
    busy, calm = make_token(store, "busy", "admin"), make_token(store, "calm", "read")
    with Server(store, "--max-requests-per-minute", "5", "--max-stored-mb", "0.01") as server:
        service = {"server": server}
        for _ in range(5):
            assert exchange(service, "GET", "/references", headers={"Authorization": f"Bearer {busy}"})[0] == 200
        status, headers, body = exchange(service, "GET", "/references", headers={"Authorization": f"Bearer {busy}"})
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 60 and "busy" in json.loads(body)["error"]
        assert exchange(service, "GET", "/references", headers={"Authorization": f"Bearer {calm}"})[0] == 200
    with Server(store, "--max-stored-mb", "0.01") as server:  # 10 KiB: one d = 24 state (4.8 KiB) fits
        client = Service(server.url, busy)
        client.upload_reference("first", stats_of(rng, 100, D))
        client.upload_reference("first", stats_of(rng, 100, D))  # a second state: 9.6 KiB, still inside
        with pytest.raises(ServiceError, match="quota") as refused:
            client.upload_reference("third", stats_of(rng, 100, D))
        assert refused.value.status == 413


def _slow_upload(port: int, token: str, *, headers_only: bool = False):
    """A raw connection that starts an upload (or only its headers) and then sends nothing more."""
    import socket

    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /evaluations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n")
    connection.sendall(head.encode() if headers_only else (head + "\r\n--b\r\n").encode())
    return connection


def test_slow_bodies_hold_no_work_slot_are_capped_and_cut_off_and_health_answers_meanwhile(tmp_path, rng):
    import time

    store = tmp_path / "store"
    admin, other = make_token(store, "ci", "admin"), make_token(store, "other", "evaluate")
    with Server(store, "--max-running", "1", "--max-bodies", "3", "--max-bodies-per-token", "2", "--body-timeout",
                "2", "--body-deadline", "4", "--header-timeout", "2") as server:
        service = {"server": server}
        Service(server.url, admin).upload_reference("golden", stats_of(rng, 300, D))
        # Two bodies that trickle (their senders wait): with one work slot, an evaluation is answered anyway.
        first, second = _slow_upload(server.port, admin), _slow_upload(server.port, admin)
        time.sleep(0.5)
        started = time.monotonic()
        answer = Service(server.url, other).evaluate(model="m", checkpoint="1", reference="golden",
                                                     stats=stats_of(rng, 200, D))
        assert answer["fid"] > 0 and time.monotonic() - started < 2, "a slow body held the work slot"
        # A token sends at most 2 bodies at once (429); the server receives at most 3 (503).
        status, headers, body = exchange(service, "POST", "/evaluations", body=b"--b\r\n", headers={
            "Authorization": f"Bearer {admin}", "Content-Type": "multipart/form-data; boundary=b"})
        assert status == 429 and "--max-bodies-per-token" in json.loads(body)["error"]
        third = _slow_upload(server.port, other)
        time.sleep(0.3)
        status, headers, body = exchange(service, "POST", "/evaluations", body=b"--b\r\n", headers={
            "Authorization": f"Bearer {other}", "Content-Type": "multipart/form-data; boundary=b"})
        assert status == 503 and headers["retry-after"] == "5" and "--max-bodies" in json.loads(body)["error"]
        started = time.monotonic()
        assert exchange(service, "GET", "/healthz")[0] == 200 and time.monotonic() - started < 0.5
        # The stalled bodies are cut off: 408, and their places are free again.
        answer = answer_of(first)
        assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer
        assert answer_of(second).startswith(b"HTTP/1.1 408") and answer_of(third).startswith(b"HTTP/1.1 408")
        # A body that trickles just under the idle timeout is cut off by the total deadline.
        import select

        steady = _slow_upload(server.port, admin)
        started = time.monotonic()
        while time.monotonic() - started < 10 and not select.select([steady], [], [], 1.0)[0]:
            steady.sendall(b"x")  # a byte a second: never a 2 s stall
        answer = response_of(steady)  # the head and the body may come in two reads
        assert answer.startswith(b"HTTP/1.1 408") and b"--body-deadline" in answer
        assert 3.5 < time.monotonic() - started < 7
        # A client that never finishes its headers is disconnected.
        silent = _slow_upload(server.port, admin, headers_only=True)
        started = time.monotonic()
        assert answer_of(silent) == b"" and time.monotonic() - started < 10
        for connection in (first, second, third, steady, silent):
            connection.close()


def test_headers_are_bounded_with_a_431_before_they_are_buffered(service):
    import socket

    from fastfid.service.server import MOST_HEADER_BYTES, MOST_HEADER_FIELDS

    def raw(request: bytes, *, pieces: int = 1) -> bytes:
        with socket.create_connection(("127.0.0.1", service["server"].port), timeout=30) as connection:
            step = -(-len(request) // pieces)
            try:
                for start in range(0, len(request), step):
                    connection.sendall(request[start:start + step])
            except (BrokenPipeError, ConnectionResetError):  # refused and closed while we were still sending
                pass
            return answer_of(connection)

    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: y\r\n" % i for i in range(MOST_HEADER_FIELDS + 1)) + b"\r\n"
    answer = raw(many)
    assert answer.startswith(b"HTTP/1.1 431") and b"header fields" in answer
    # One value of 4 MiB, sent in pieces: refused once 64 KiB have come, not buffered whole.
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 << 20)
    answer = raw(huge, pieces=64)
    assert answer.startswith(b"HTTP/1.1 431") and b"%d KiB" % (MOST_HEADER_BYTES // 1024) in answer
    # Headers within the bounds, followed at once by a body larger than the bound, are a request.
    from fastfid.client import _multipart

    rng = np.random.default_rng(431)
    body, content_type = _multipart({"feature_space": SPACE}, [("features", "f.npy", _npy(rng.standard_normal((400, D))))])
    assert len(body) > MOST_HEADER_BYTES
    fine = (b"PUT /references/header-bound HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n"
            b"Content-Type: %s\r\nAuthorization: Bearer %s\r\n" % (len(body), content_type.encode(),
                                                                       service["write_token"].encode())
            + b"".join(b"X-%d: y\r\n" % i for i in range(MOST_HEADER_FIELDS - 6)) + b"\r\n" + body)
    assert raw(fine).startswith(b"HTTP/1.1 201")
    assert exchange(service, "GET", "/healthz")[0] == 200


def _npy(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_404_and_405_are_json_and_every_response_has_an_id_and_security_headers(service):
    status, headers, body = exchange(service, "GET", "/nowhere")
    assert status == 404 and json.loads(body)["request_id"] == headers["x-request-id"]
    status, headers, body = exchange(service, "DELETE", "/evaluations",
                                     headers={"Authorization": f"Bearer {service['write_token']}"})
    assert status == 405 and "error" in json.loads(body) and "GET" in headers["allow"]
    status, headers, _ = exchange(service, "GET", "/healthz", headers={"X-Request-ID": "ci-run-42"})
    assert status == 200 and headers["x-request-id"] == "ci-run-42"  # a caller's plain ID is kept
    status, headers, _ = exchange(service, "GET", "/healthz", headers={"X-Request-ID": "bad id\twith tab"})
    assert headers["x-request-id"] != "bad id\twith tab" and len(headers["x-request-id"]) == 32
    status, headers, _ = exchange(service, "GET", "/signin")
    assert status == 200 and headers["x-content-type-options"] == "nosniff"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and headers["x-frame-options"] == "DENY"


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(service, rng):
    writer = service["writer"]
    for name in ("=cmd|' /C calc'!A0", "+1+1", "@SUM(A1)", "-2+3"):
        writer.evaluate(model="spreadsheet", checkpoint=name, reference="golden", stats=stats_of(rng, 50, D),
                        feature_space=SPACE)
    lines = get(service, "/models/spreadsheet/history?format=csv", service["write_token"]).decode().splitlines()[1:]
    assert [line.split(",")[0][:2] for line in lines] == ["'=", "'+", "'@", "'-"]
    assert all(not line.split(",")[1].startswith("'") for line in lines)  # numbers stay numbers


def test_the_store_is_private_and_sweeps_what_killed_writers_left(tmp_path, rng):
    import socket
    import stat

    store = tmp_path / "store"
    token = make_token(store, "ci", "admin")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a writer that no longer runs
    stray = store / "statistics" / f".{'a' * 64}.npz.{socket.gethostname()}.{gone.pid}.x1y2.tmp"
    stray.write_bytes(b"half a statistics file")
    live = store / "statistics" / f".{'b' * 64}.npz.{socket.gethostname()}.{os.getpid()}.x1y2.tmp"
    live.write_bytes(b"a save under way in a running process")
    with Server(store) as server:
        Service(server.url, token).upload_reference("golden", stats_of(rng, 100, D))
    assert not stray.exists() and live.exists()

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(store) == mode(store / "statistics") == 0o700
    assert mode(store / "fastfid.db") == 0o600
    files = list((store / "statistics").glob("*.npz"))
    assert files and all(mode(path) == 0o600 for path in files)


def test_healthz_is_liveness_and_readyz_checks_the_database_and_the_files(tmp_path, rng):
    store = tmp_path / "store"
    token = make_token(store, "ci", "admin")
    with Server(store) as server:
        service = {"server": server}
        Service(server.url, token).upload_reference("golden", stats_of(rng, 200, D))
        status, _, body = exchange(service, "GET", "/readyz")
        assert status == 200 and json.loads(body)["status"] == "ready"
        path = next((store / "statistics").glob("*.npz"))
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF  # one flipped byte on disk
        path.write_bytes(bytes(data))
        status, headers, body = exchange(service, "GET", "/readyz")
        answer = json.loads(body)
        assert status == 503 and headers["retry-after"] and "reference 'golden' version 1" in answer["problems"][0]
        assert exchange(service, "GET", "/healthz")[0] == 200  # alive, though not ready
    # A flipped bit that keeps the file's size and modification time is found too, within --verify-every.
    with Server(store, "--verify-every", "1") as server:
        service = {"server": server}
        Service(server.url, token).upload_reference("silver", stats_of(rng, 200, D + 1))
        path = store / "statistics" / f"{Service(server.url, token).reference('silver')['state_sha256']}.npz"
        status, _, body = exchange(service, "GET", "/readyz")  # silver is hashed and found intact here
        assert not any("'silver'" in problem for problem in json.loads(body)["problems"])
        info = path.stat()
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # the same size and time
        import time

        time.sleep(1.2)
        status, _, body = exchange(service, "GET", "/readyz")
        assert status == 503 and any("'silver'" in problem for problem in json.loads(body)["problems"])


def test_a_500_names_a_request_id_and_nothing_internal(tmp_path, rng):
    store = tmp_path / "store"
    token = make_token(store, "ci", "admin")
    with Server(store) as server:
        Service(server.url, token).upload_reference("golden", stats_of(rng, 500, D))
    database = store / "fastfid.db"
    data = bytearray(database.read_bytes())
    page = 4096
    assert len(data) > 2 * page
    data[page:] = bytes(len(data) - page)  # every table's pages zeroed: the schema (page 1) survives
    database.write_bytes(bytes(data))
    with Server(store) as server:
        status, headers, body = exchange({"server": server}, "GET", "/references",
                                         headers={"Authorization": f"Bearer {token}"})
        ready, _, readiness = exchange({"server": server}, "GET", "/readyz")
        assert ready == 503 and "the database does not answer correctly" in json.loads(readiness)["problems"][0]
        log = server.log.read_text()
    answer = json.loads(body)
    assert status == 500 and answer["request_id"] == headers["x-request-id"]
    assert answer["error"] == f"internal error: the server's log has the details under request ID {answer['request_id']}"
    assert answer["request_id"] in log and "malformed" in log  # the details, in the log only


def test_refusals_change_nothing(service, tmp_path, rng):
    writer, before = service["writer"], stored_count(service)
    other_space = stats_of(rng, 100, D, space="other-network")
    cases = [
        (dict(stats=other_space), 422, "feature-space mismatch.*'other-network'.*'test-space'"),
        (dict(stats=other_space, feature_space=SPACE), 422, "says its features are 'other-network'"),
        (dict(stats=stats_of(rng, 100, D + 1)), 422, f"dim {D + 1}.*dim {D}"),
        (dict(stats=stats_of(rng, 100, D), reference_version=99), 404, "no version 99"),
        (dict(stats=stats_of(rng, 1, D)), 422, "at least 2 samples"),
    ]
    for options, status, message in cases:
        with pytest.raises(ServiceError, match=message) as refused:
            writer.evaluate(model="refused", checkpoint="1", reference="golden", **options)
        assert refused.value.status == status
    with pytest.raises(ServiceError, match="no reference 'missing'") as refused:
        writer.evaluate(model="refused", checkpoint="1", reference="missing", stats=stats_of(rng, 10, D))
    assert refused.value.status == 404
    (tmp_path / "corrupt.npz").write_bytes(saved(stats_of(rng, 50, D), tmp_path / "good.npz").read_bytes()[:300])
    with pytest.raises(ServiceError, match="not a readable .npz") as refused:
        writer.evaluate(model="refused", checkpoint="1", reference="golden", stats=tmp_path / "corrupt.npz")
    assert refused.value.status == 400
    np.savez(tmp_path / "pickled.npz", mu=np.zeros(D), sigma=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ServiceError, match="Python objects") as refused:
        writer.evaluate(model="refused", checkpoint="1", reference="golden", stats=tmp_path / "pickled.npz")
    assert refused.value.status == 422
    with pytest.raises(ServiceError, match="NaN or Inf") as refused:
        writer.evaluate(model="refused", checkpoint="1", reference="golden", features=np.full((50, D), np.nan),
                        feature_space=SPACE)
    assert refused.value.status == 422
    assert stored_count(service) == before


def test_tokens_and_scopes(service, rng):
    stats = stats_of(rng, 50, D)
    anonymous = Service(service["server"].url, token="")
    for client, status, message in ((anonymous, 401, "missing token"), (Service(service["server"].url, "forged"),
                                                                          401, "unknown token"),
                                    (service["reader"], 403, "read scope")):
        with pytest.raises(ServiceError, match=message) as refused:
            client.evaluate(model="auth", checkpoint="1", reference="golden", stats=stats)
        assert refused.value.status == status
    with pytest.raises(ServiceError, match="missing token"):
        anonymous.history("stats-model")  # reads need a token too, unless --public-read
    assert service["reader"].reference("golden")["version"] == 1
    assert anonymous.health()["status"] == "ok"  # health is open; metrics name canaries and counts
    status, _, body = exchange(service, "GET", "/metrics")
    assert status == 401 and "missing token" in json.loads(body)["error"]
    text = (service["store"] / "fastfid.db").read_bytes()
    assert service["write_token"].encode() not in text  # stored hashed


def test_token_list_and_revoke(tmp_path, rng):
    store = tmp_path / "store"
    token = make_token(store, "leaver", "admin")
    make_token(store, "stays", "read")

    def command(*words):
        return subprocess.run([sys.executable, "-m", "fastfid", "token", *words, "--store", str(store)],
                              capture_output=True, text=True)

    listed = command("list")
    assert listed.stdout.splitlines() == ["leaver\tadmin", "stays\tread"] and token not in listed.stdout
    assert command("revoke", "leaver").returncode == 0
    with Server(store) as server:
        with pytest.raises(ServiceError, match="unknown token") as refused:
            Service(server.url, token).upload_reference("r", stats_of(rng, 10, 4))
        assert refused.value.status == 401
    missing = command("revoke", "nobody")
    assert missing.returncode == 1 and "no token named 'nobody'" in missing.stderr
    # Revoked while the server runs and after the token was used: refused at the next request.
    reader = make_token(store, "soon-gone", "read")
    with Server(store, "--workers", "2") as server:
        client = Service(server.url, reader)
        for _ in range(4):  # both workers have seen it
            client.evaluations()
        assert command("revoke", "soon-gone").returncode == 0
        for _ in range(4):
            with pytest.raises(ServiceError, match="unknown token"):
                client.evaluations()


def test_retried_posts_are_stored_once_and_concurrent_posts_all_land(service, rng):
    url, token = service["server"].url, service["write_token"]
    stats = stats_of(rng, 100, D)
    body = post_raw(url, token, stats, model="retry", checkpoint="1", key="the-same-key")
    again = post_raw(url, token, stats, model="retry", checkpoint="1", key="the-same-key")
    assert again["id"] == body["id"] and again["replayed"] and not body["replayed"]
    results, errors = [], []

    def post(index: int) -> None:
        try:
            results.append(service["writer"].evaluate(model="concurrent", checkpoint=str(index % 4),
                                                      reference="golden", stats=stats_of(
                                                          np.random.default_rng(index), 100, D)))
        except Exception as error:  # collected: the test fails below with it
            errors.append(error)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    stored = service["reader"].evaluations(model="concurrent")
    assert sorted(r["id"] for r in stored) == sorted(r["id"] for r in results) and len(stored) == 24


def test_upload_limit(tmp_path, rng):
    store = tmp_path / "store"
    token = make_token(store, "ci", "admin")
    with Server(store, "--max-upload-mb", "0.05") as server:
        client = Service(server.url, token)
        client.upload_reference("small", stats_of(rng, 100, 8))
        with pytest.raises(ServiceError, match="upload too large: the limit is 0.05 MiB") as refused:
            client.upload_reference("large", stats_of(rng, 100, 128))  # 128 · 129 / 2 · 8 bytes > 50 KiB
        assert refused.value.status == 413
        with pytest.raises(ServiceError, match="no reference 'large'"):
            client.reference("large")
        # A chunked upload declares no length: refused as its bytes pass the limit.
        from fastfid.client import _multipart, _stats_part

        body, content_type = _multipart({}, [_stats_part("stats", stats_of(rng, 100, 128))])
        connection = http.client.HTTPConnection("127.0.0.1", server.port)
        connection.request("PUT", "/references/chunked", body=(body[i:i + 8192] for i in range(0, len(body), 8192)),
                           headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
                           encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413 and "upload too large" in json.loads(response.read())["error"]
        connection.close()
        with pytest.raises(ServiceError, match="no reference 'chunked'"):
            client.reference("chunked")


def test_metrics_and_json_logs(service):
    text = get(service, "/metrics", service["write_token"]).decode()
    assert 'fastfid_requests_total{method="POST",route="/evaluations",status="201"}' in text
    assert "fastfid_request_seconds_bucket" in text and "fastfid_evaluations_total" in text
    assert "fastfid_reference_cache_lookups_total{result=\"hit\"}" in text
    assert 'fastfid_stored_evaluations' in text
    records = service["server"].log_records()
    requests = [r for r in records if r["message"] == "request"]
    assert requests and {"method", "path", "status", "ms"} <= set(requests[-1])


def test_canaries_alert_on_band_reference_change_and_corruption(tmp_path, rng):
    store = tmp_path / "store"
    token = make_token(store, "ci", "admin")
    with Webhook(failures=2) as hook, Server(store, "--webhook", hook.url) as server:
        client = Service(server.url, token)
        reference = stats_of(rng, 1000, D)
        client.upload_reference("golden", reference)
        canary_stats = stats_of(rng, 500, D, shift=0.1)
        value = fastfid.fid(canary_stats, reference)
        client.set_canary("in-band", canary_stats, reference="golden", low=value * 0.99, high=value * 1.01)
        client.set_canary("too-tight", canary_stats, reference="golden", low=value * 1.1, high=value * 1.2)
        ok = client.run_canary("in-band")
        assert ok["status"] == "ok" and ok["alerts"] == []
        np.testing.assert_allclose(ok["fid"], value, rtol=RTOL)
        out = client.run_canary("too-tight")
        assert [a["kind"] for a in out["alerts"]] == ["out_of_band"] and "outside the expected band" in \
            out["alerts"][0]["message"]
        still = client.run_canary("too-tight")  # still out of band: the same crossing, no second alert
        assert still["status"] == "alert" and still["problems"] == ["out_of_band"] and still["alerts"] == []
        # The webhook failed twice, then took it: three attempts, recorded (backoff 1 s, 2 s).
        alert = wait_for(lambda: next((a for a in client.alerts("too-tight") if a["webhook_delivered"]), None))
        assert alert["webhook_attempts"] == 3 and hook.bodies[0]["alert"]["kind"] == "out_of_band"
        text = get_url(server.url + "/metrics", token).decode()
        assert 'fastfid_canary_in_band{canary="in-band"} 1.0' in text
        assert 'fastfid_canary_in_band{canary="too-tight"} 0.0' in text
        assert 'fastfid_alerts_total{kind="out_of_band"} 1.0' in text
        client.upload_reference("golden", stats_of(rng, 1000, D))  # a new version under the same name
        changed = client.run_canary("in-band")
        assert "reference_changed" in [a["kind"] for a in changed["alerts"]]
        version = client.reference("golden")
        path = store / "statistics" / f"{version['state_sha256']}.npz"
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF  # one flipped byte on disk
        path.write_bytes(bytes(data))
        corrupt = client.run_canary("in-band")
        assert [a["kind"] for a in corrupt["alerts"]] == ["reference_corrupt"] and corrupt["fid"] is None
        assert any(r.get("kind") == "reference_corrupt" and r["level"] == "warning" for r in server.log_records())


class Receiver:
    """A loopback TCP server that answers every connection with the same raw bytes, and counts them."""

    def __init__(self, answer: bytes):
        import socketserver

        receiver = self
        self.connections = 0

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                receiver.connections += 1
                self.request.recv(1 << 16)
                self.request.sendall(answer)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_count_only_2xx_follow_no_redirect_and_retry_every_failure(tmp_path):
    from fastfid.service.canaries import Alerts, check_webhook
    from fastfid.service.store import Store

    for url in ("file:///etc/hostname", "ftp://example.org/x", "/alerts", "http://"):
        with pytest.raises(ValueError, match="http:// or https://"):
            check_webhook(url)
    store = Store(tmp_path / "store")
    with Webhook() as target:
        redirect = Receiver(f"HTTP/1.1 302 Found\r\nLocation: {target.url}\r\nContent-Length: 0\r\n\r\n".encode())
        garbage = Receiver(b"this is not HTTP at all\r\n\r\n")
        no_content = Receiver(b"HTTP/1.1 204 No Content\r\n\r\n")
        try:
            for receiver, delivered in ((redirect, False), (garbage, False), (no_content, True)):
                alerts = Alerts(store, receiver.url, attempts=3, backoff=0.01)
                alert = alerts.raise_alert("c", "out_of_band", "test")
                alerts.wait(timeout=30)
                alerts.close()
                recorded = store.alert(alert["id"])
                assert recorded["webhook_delivered"] == delivered, (receiver.url, recorded)
                assert recorded["webhook_attempts"] == (1 if delivered else 3) == receiver.connections
            assert target.attempts == 0  # the redirect was not followed
            assert "302" in store.alert(1)["webhook_error"] and "BadStatusLine" in store.alert(2)["webhook_error"]
        finally:
            for receiver in (redirect, garbage, no_content):
                receiver.close()
    store.close()


def test_scheduled_canaries(tmp_path, rng):
    store = tmp_path / "store"
    token = make_token(store, "ci", "admin")
    with Server(store, "--canary-every", "1s") as server:
        client = Service(server.url, token)
        reference = stats_of(rng, 300, D)
        client.upload_reference("golden", reference)
        client.set_canary("nightly", stats_of(rng, 300, D), reference="golden", low=0, high=1e9)
        canary = wait_for(lambda: (lambda c: c if c["last_run"] else None)(
            json.loads(get_url(server.url + "/canaries/nightly", token))))
        assert canary["last_status"] == "ok"


def test_sigkill_mid_write_loses_nothing_acknowledged(tmp_path, rng):
    store = tmp_path / "store"
    token = make_token(store, "ci", "admin")
    server = Server(store).start()
    client = Service(server.url, token, retries=0)
    client.upload_reference("golden", stats_of(rng, 500, D))
    acknowledged, stop = [], threading.Event()

    def post_until_killed(worker: int) -> None:
        local = np.random.default_rng(worker)
        while not stop.is_set():
            try:
                acknowledged.append(client.evaluate(model="killed", checkpoint=str(worker), reference="golden",
                                                    stats=stats_of(local, 50, D)))
            except (ServiceError, ConnectionError, OSError):
                return

    threads = [threading.Thread(target=post_until_killed, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= 20, timeout=60, every=0.01)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join()
    with Server(store, port=server.port) as restarted:
        stored = {r["id"]: r for r in Service(restarted.url, token).evaluations(model="killed")}
        assert len(acknowledged) >= 20
        for result in acknowledged:
            assert stored[result["id"]]["fid"] == result["fid"]
        # And the store takes new work after the kill.
        Service(restarted.url, token).evaluate(model="killed", checkpoint="after", reference="golden",
                                               stats=stats_of(rng, 50, D))


def test_several_workers_share_one_store(tmp_path, rng):
    store = tmp_path / "store"
    with Server(store, "--workers", "2", "--public-metrics") as server:  # an empty store: the tables are made once
        token = make_token(store, "ci", "admin")
        client = Service(server.url, token)
        client.upload_reference("golden", stats_of(rng, 500, D))
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(client.evaluate(
            model="workers", checkpoint=str(i), reference="golden", stats=stats_of(np.random.default_rng(i), 50, D))))
            for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(client.evaluations(model="workers")) == 16 == len({r["id"] for r in results})
        text = urllib.request.urlopen(server.url + "/metrics").read().decode()  # --public-metrics
        assert "fastfid_requests_total" in text and "fastfid_stored_evaluations 16.0" in text
        # The workers' shared counters are private like the rest of the store.
        [counters] = store.glob("prometheus-*")
        assert counters.stat().st_mode & 0o777 == 0o700
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in counters.iterdir()) and any(counters.iterdir())


def test_submit_on_the_command_line(service, tmp_path, rng):
    paths = [saved(shard, tmp_path / f"shard{i}.npz")
             for i, shard in enumerate(split_into_shards(features(rng, 400, D), 4))]
    done = subprocess.run(
        [sys.executable, "-m", "fastfid", "submit", *map(str, paths), "--url", service["server"].url, "--token",
         service["write_token"], "--model", "cli", "--checkpoint", "7", "--reference", "golden", "--feature-space", SPACE, "--json"],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["groups"] == 4 and result["model"] == "cli"
    done = subprocess.run(
        [sys.executable, "-m", "fastfid", "submit", str(paths[0]), "--url", service["server"].url, "--model", "cli",
         "--checkpoint", "8", "--reference", "golden"], capture_output=True, text=True,
        env={k: v for k, v in __import__("os").environ.items() if k != "FASTFID_TOKEN"})
    assert done.returncode == 1 and "401: missing token: this needs a token of scope 'evaluate' or wider" in done.stderr
    assert "--token or $FASTFID_TOKEN" in done.stderr and " a evaluate " not in done.stderr


def test_several_spaces_a_reference_each_and_one_evaluation_across_them(service, tmp_path, rng):
    from fastfid.representations import SpaceStats

    dims = {"dinov2-vit-l14": 12, "clip-vit-l-14": 10}

    def spaces(n, shift):
        return SpaceStats({name: stats_of(rng, n, d, shift=shift, space=f"{name} weights=test resize=dgm-eval 224x224")
                           for name, d in dims.items()})

    writer, reference = service["writer"], spaces(2000, 0.0)
    uploaded = writer.upload_reference("imagenet", reference)["references"]
    assert [r["name"] for r in uploaded] == ["imagenet.dinov2-vit-l14", "imagenet.clip-vit-l-14"]
    assert [r["dim"] for r in uploaded] == [12, 10]
    generated, valfd = spaces(1500, 0.3), {"dinov2-vit-l14": 2.0, "clip-vit-l-14": 0.5}
    result = writer.evaluate(model="spaces", checkpoint=1, reference="imagenet", stats=generated, validation_fd=valfd)
    expected = fastfid.fdr({name: (generated[name], reference[name], valfd[name]) for name in dims})
    for name in dims:
        record = result["spaces"][name]
        assert record["reference"] == f"imagenet.{name}" and record["feature_space"] == generated[name].feature_space
        assert record["fid"] == pytest.approx(expected.spaces[name].fd, rel=RTOL)
    assert result["fdr"]["k"] == 2 and result["fdr"]["value"] == pytest.approx(expected.value, rel=RTOL)
    # shards of several spaces: a jackknife error bar in each space
    shards = [spaces(400, 0.3) for _ in range(4)]
    for i, shard in enumerate(shards):
        shard.save(tmp_path / f"shard{i}.npz")
    done = subprocess.run(
        [sys.executable, "-m", "fastfid", "submit", *(str(tmp_path / f"shard{i}.npz") for i in range(4)), "--url",
         service["server"].url, "--token", service["write_token"], "--model", "spaces", "--checkpoint", "2",
         "--reference", "imagenet", "--valfd", "dinov2-vit-l14=2", "--valfd", "clip-vit-l-14=0.5"],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("dinov2-vit-l14: FID: ") and "jackknife SE" in lines[0] and lines[-1].startswith("FDr^2: ")
    assert [e["checkpoint"] for e in service["reader"].evaluations(reference="imagenet.clip-vit-l-14")] == ["1", "2"]
    # refusals name the problem and store nothing
    before = stored_count(service)
    other = SpaceStats({"dinov2-vit-l14": generated["dinov2-vit-l14"], "siglip-so400m": generated["clip-vit-l-14"]})
    with pytest.raises(ServiceError, match="404.*imagenet.siglip-so400m"):
        writer.evaluate(model="spaces", checkpoint=3, reference="imagenet", stats=other)
    with pytest.raises(ServiceError, match="422.*validation_fd must give every space"):
        writer.evaluate(model="spaces", checkpoint=3, reference="imagenet", stats=generated,
                        validation_fd={"clip-vit-l-14": 1.0})
    with pytest.raises(ServiceError, match="422.*omit feature_space"):
        writer.evaluate(model="spaces", checkpoint=3, reference="imagenet", stats=generated, feature_space="x")
    assert stored_count(service) == before


# --- raw HTTP ------------------------------------------------------------------------------------
def get_url(url: str, token: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request) as response:
        return response.read()


def get(service, path: str, token: str | None = None) -> bytes:
    return get_url(service["server"].url + path, token)


def post_raw(url: str, token: str, stats, *, model: str, checkpoint: str, key: str) -> dict:
    from fastfid.client import _multipart, _stats_part

    body, content_type = _multipart({"model": model, "checkpoint": checkpoint, "reference": "golden"},
                                    [_stats_part("stats", stats)])
    request = urllib.request.Request(url + "/evaluations", data=body, method="POST", headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token}", "Idempotency-Key": key})
    try:
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise AssertionError(error.read()) from None



def test_client_retries_with_one_idempotency_key(rng):
    """503 twice, then an answer: the client tries three times, under one key (so the service,
    had it stored the first try, would return that instead of storing it again)."""
    import http.server

    keys: list[str] = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            keys.append(self.headers["Idempotency-Key"])
            body = json.dumps({"fid": 1.0} if len(keys) > 2 else {"error": "restarting"}).encode()
            self.send_response(201 if len(keys) > 2 else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = Service(f"http://127.0.0.1:{server.server_address[1]}", "t", backoff=0.01)
        assert client.evaluate(model="m", checkpoint=1, reference="r", stats=stats_of(rng, 10, 4)) == {"fid": 1.0}
        assert len(keys) == 3 and len(set(keys)) == 1
        with pytest.raises(ConnectionError, match="after 1 tries"):
            Service("http://127.0.0.1:1", "t", retries=0).health()  # nothing listens on port 1
    finally:
        server.shutdown()
        server.server_close()


def test_text_inputs_with_control_characters_and_foreign_sign_ins_are_refused(service, rng):
    from urllib.parse import urlencode

    token = service["write_token"]
    auth = {"Authorization": f"Bearer {token}"}
    for path in ("/references/a%00b", "/evaluations?model=a%00", "/models/m%01/history", "/alerts?canary=%00"):
        status, _, body = exchange(service, "GET", path, headers=auth)
        assert status == 400 and "control character" in json.loads(body)["error"], (path, body)
    for fields in ({"reference": "gol\x00den"}, {"feature_space": "a\x00b"}, {"model": "m\x07"}):
        status, _, refused = post_form(service, {"model": "m", "checkpoint": "1", "reference": "golden", **fields},
                                       stats_of(rng, 50, D), headers={})
        assert status == 422, refused
    status, _, refused = post_form(service, {"model": "m", "checkpoint": "1", "reference": "golden",
                                             "feature_space": "x" * 1001}, stats_of(rng, 50, D, space=None), headers={})
    assert status == 422 and "feature_space" in refused["error"]
    status, _, refused = post_form(service, {"model": "m", "checkpoint": "1", "reference": "golden",
                                             "validation_fd": '{"test-space": 1.0}'}, stats_of(rng, 50, D), headers={})
    assert status == 422 and "validation_fd" in refused["error"]  # one space: nothing to normalise, said so
    # Login CSRF: a sign-in form posted from another site's page is refused.
    read = make_token(service["store"], "csrf-reader", "read")
    form = urlencode({"token": read, "next": "/"}).encode()
    for foreign in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        status, _, body = exchange(service, "POST", "/signin", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", **foreign})
        assert status == 403 and "own page" in json.loads(body)["error"]
    own = f"http://127.0.0.1:{service['server'].port}"
    status, headers, _ = exchange(service, "POST", "/signin", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert status == 303 and "fastfid_read" in headers["set-cookie"]
