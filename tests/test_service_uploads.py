"""The service's uploads, in process (Starlette's test client over the real app): every check an
upload's headers allow runs before any of its arrays is read, which a counter on the archive's
member reads proves (the messages are checked elsewhere; this checks the mechanism)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from fastfid.client import _multipart  # noqa: E402
from fastfid.files import archive, format as keys  # noqa: E402
from fastfid.service.app import create_app  # noqa: E402
from fastfid.service.config import ServiceConfig  # noqa: E402
from fastfid.service.store import Store  # noqa: E402
from support.service import features, stats_of  # noqa: E402
from support.hostile import overlapping_zip  # noqa: E402

D = 8
SPACE = "test-space"


@pytest.fixture
def client(tmp_path):
    store = tmp_path / "store"
    tokens = Store(store)
    tokens.add_token("admin", "admin", "admin-token")
    tokens.close()
    app = create_app(ServiceConfig(store=str(store)))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def array_reads(monkeypatch):
    """The array members read (metadata members, a few short strings, are not counted)."""
    reads: list[str] = []
    original = archive.Npz.read

    def counted(self, key):
        if key not in keys.METADATA:
            reads.append(key)
        return original(self, key)

    monkeypatch.setattr(archive.Npz, "read", counted)
    return reads


def send(client, method: str, path: str, files: list, fields: dict | None = None, headers: dict | None = None):
    body, content_type = _multipart(fields or {}, files)
    return client.request(method, path, content=body, headers={
        "content-type": content_type, "authorization": "Bearer admin-token", **(headers or {})})


def npz_bytes(arrays: dict, compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def stats_file(stats, compressed: bool) -> bytes:
    from fastfid.files.stats import stats_arrays

    return npz_bytes(stats_arrays(stats.to_stored()), compressed)


def spaces_file(spaces: dict, compressed: bool) -> bytes:
    """A file of several spaces as SpaceStats.save writes it, or its members re-saved compressed."""
    import tempfile
    from pathlib import Path

    from fastfid.representations import SpaceStats

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spaces.npz"
        SpaceStats(spaces).save(path)
        if not compressed:
            return path.read_bytes()
        with np.load(path) as data:
            return npz_bytes({key: data[key] for key in data.files}, True)


def put_reference(client, name: str, stats) -> None:
    answer = send(client, "PUT", f"/references/{name}", [("stats", "ref.npz", stats_file(stats, False))])
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_a_dim_mismatch_is_refused_before_any_array_is_read(client, array_reads, rng, compressed):
    put_reference(client, "golden", stats_of(rng, 100, D, space=SPACE))
    put_reference(client, "multi.a", stats_of(rng, 100, D, space="a"))
    put_reference(client, "multi.b", stats_of(rng, 100, D, space="b"))
    array_reads.clear()
    fields = {"model": "m", "checkpoint": "1", "reference": "golden"}
    wrong = stats_of(rng, 50, D + 4, space=SPACE)
    answer = send(client, "POST", "/evaluations", [("stats", "gen.npz", stats_file(wrong, compressed))], fields)
    assert answer.status_code == 422 and f"dim {D + 4}" in answer.json()["error"]
    shards = [("shard", f"s{i}.npz", stats_file(wrong, compressed)) for i in range(3)]
    assert send(client, "POST", "/evaluations", shards, fields).status_code == 422
    # A file of several spaces: the second space's dim is wrong; no space's arrays are read.
    spaces = {"a": stats_of(rng, 50, D, space="a"), "b": stats_of(rng, 50, D + 2, space="b")}
    answer = send(client, "POST", "/evaluations", [("stats", "gen.npz", spaces_file(spaces, compressed))],
                  fields | {"reference": "multi"})
    assert answer.status_code == 422, answer.text
    assert array_reads == []
    # The same uploads with the right dims are read and evaluated: the counter sees real reads.
    right = stats_of(rng, 50, D, space=SPACE)
    assert send(client, "POST", "/evaluations", [("stats", "gen.npz", stats_file(right, compressed))],
                fields).status_code == 201
    assert array_reads


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_unbounded_work_is_refused_before_any_array_is_read(client, array_reads, rng, compressed):
    put_reference(client, "golden", stats_of(rng, 100, D, space=SPACE))
    array_reads.clear()
    fields = {"model": "m", "checkpoint": "1", "reference": "golden"}
    # 16 spaces whose members declare d = 4096 states (128 MiB each) in a few KB of zeros.
    big = {f"s{i}": (4096,) for i in range(16)}
    inner = []
    for shape in big.values():
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
        inner.append(header.getvalue())
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zipped:
        record = np.str_('{"spaces": %s, "validation_fd": {}}' % list(big).__repr__().replace("'", '"'))
        member = io.BytesIO()
        np.save(member, record)
        zipped.writestr(keys.SPACES + ".npy", member.getvalue())
        for index, head in enumerate(inner):
            space = io.BytesIO()
            with zipfile.ZipFile(space, "w", zipfile.ZIP_DEFLATED) as one:
                one.writestr("mu.npy", head + bytes(64))
                sigma = io.BytesIO()
                np.lib.format.write_array_header_1_0(sigma, {"descr": "<f8", "fortran_order": False,
                                                             "shape": (4096, 4096)})
                one.writestr("sigma.npy", sigma.getvalue() + bytes(4096))
            blob = io.BytesIO()
            np.save(blob, np.frombuffer(space.getvalue(), np.uint8))
            zipped.writestr(f"space{index}.npy", blob.getvalue())
    answer = send(client, "POST", "/evaluations", [("stats", "gen.npz", outer.getvalue())], fields)
    assert answer.status_code in (413, 422), answer.text
    assert array_reads == []


def test_features_posts_are_bounded_from_their_header(client, array_reads, rng):
    put_reference(client, "golden", stats_of(rng, 100, D, space=SPACE))
    tiny = io.BytesIO()
    np.save(tiny, np.ones((2, 8192), np.float32))
    answer = send(client, "POST", "/evaluations", [("features", "f.npy", tiny.getvalue())],
                  {"model": "m", "checkpoint": "1", "reference": "golden", "feature_space": SPACE})
    assert answer.status_code == 413 and "64×" in answer.json()["error"]
    # Enough rows for an error bar cost the jackknife's 20 replicates too: 70 rows of d = 2048 (574 KB)
    # declare a 32 MiB state, under 64× the upload, but 21 FDs of it are not.
    jackknifed = io.BytesIO()
    np.save(jackknifed, np.ones((70, 2048), np.float32))
    answer = send(client, "POST", "/evaluations", [("features", "f.npy", jackknifed.getvalue())],
                  {"model": "m", "checkpoint": "1", "reference": "golden", "feature_space": SPACE})
    assert answer.status_code == 413 and "jackknife replicates" in answer.json()["error"]
    rows = io.BytesIO()
    np.save(rows, features(rng, 100, D))
    answer = send(client, "POST", "/evaluations", [("features", "f.npy", rows.getvalue())],
                  {"model": "m", "checkpoint": "1", "reference": "golden", "feature_space": SPACE})
    assert answer.status_code == 201, answer.text


def test_overlapping_zip_entries_are_refused_on_every_python(tmp_path, client, array_reads):
    path = tmp_path / "overlap.npz"
    path.write_bytes(overlapping_zip())
    with zipfile.ZipFile(path) as zipped:  # zipfile itself lists both (3.11.7 reads both as well)
        assert len(zipped.namelist()) == 2
    import fastfid

    with pytest.raises(ValueError, match="share their bytes"):
        fastfid.FeatureStats.load(path)
    answer = send(client, "POST", "/evaluations", [("stats", "gen.npz", path.read_bytes())],
                  {"model": "m", "checkpoint": "1", "reference": "golden"})
    assert answer.status_code == 422 and "share their bytes" in answer.json()["error"]
    assert array_reads == []


def test_an_archive_of_too_many_members_is_refused_before_listing_them(tmp_path):
    import fastfid

    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as zipped:
        for index in range(archive.MOST_MEMBERS + 1):
            zipped.writestr(f"m{index}.npy", b"")
    with pytest.raises(ValueError, match="members; a statistics file holds at most"):
        fastfid.FeatureStats.load(path)


def test_each_archive_is_opened_at_most_twice_per_evaluation(client, monkeypatch, rng):
    put_reference(client, "golden", stats_of(rng, 100, D, space=SPACE))
    put_reference(client, "multi.a", stats_of(rng, 100, D, space="a"))
    put_reference(client, "multi.b", stats_of(rng, 100, D, space="b"))
    opened: list[str] = []
    original = archive.Npz.__init__

    def counting(self, handle, path, **options):
        if str(path).startswith("the upload"):  # not the store's files (the reference, read once and cached)
            opened.append(str(path))
        original(self, handle, path, **options)

    monkeypatch.setattr(archive.Npz, "__init__", counting)
    fields = {"model": "m", "checkpoint": "1", "reference": "golden"}
    answer = send(client, "POST", "/evaluations", [("stats", "g.npz", stats_file(stats_of(rng, 50, D, space=SPACE),
                                                                                  False))], fields)
    assert answer.status_code == 201
    assert len(opened) == 2, opened
    opened.clear()
    spaces = {"a": stats_of(rng, 50, D, space="a"), "b": stats_of(rng, 50, D, space="b")}
    answer = send(client, "POST", "/evaluations", [("stats", "g.npz", spaces_file(spaces, False))],
                  fields | {"reference": "multi"})
    assert answer.status_code == 201, answer.text
    # The file twice, and each space's archive (inside it, read in place) twice.
    assert opened.count("the upload 'g.npz'") == 2 and len(opened) == 2 + 2 * len(spaces), opened


def test_vanishing_features_are_refused_as_references_and_as_evaluations(client, rng):
    vanishing = stats_of(rng, 100, D, space=SPACE)
    vanishing = type(vanishing).from_features(features(rng, 100, D) * 1e-7)  # an untrained Inception's scale
    vanishing.feature_space = SPACE
    answer = send(client, "PUT", "/references/blank", [("stats", "ref.npz", stats_file(vanishing, False))])
    assert answer.status_code == 422 and "features vanish" in answer.json()["error"]
    put_reference(client, "golden", stats_of(rng, 100, D, space=SPACE))
    answer = send(client, "POST", "/evaluations", [("stats", "gen.npz", stats_file(vanishing, False))],
                  {"model": "m", "checkpoint": "1", "reference": "golden"})
    assert answer.status_code == 422 and "features vanish" in answer.json()["error"]
    assert send(client, "GET", "/evaluations", []).json() == []
