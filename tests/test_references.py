"""Named references (fastfid.references): the table against the publishers' own code, fetched from a
local HTTP server that serves small files in each publisher's format at the publishers' paths (through
FASTFID_REFERENCE_MIRROR; no test touches the network), resumed after a cut transfer, checked before
they are kept and at every later read, and accepted by name wherever a statistics file is."""

import io
import json
import pickle
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import fastfid
from fastfid import references
from fastfid._hashing import file_sha256
from fastfid.cli import main


# --- a publisher's server -------------------------------------------------------------------------
class Publisher:
    """Files by URL path; ``cut[path] = n`` closes the next response for that path after n bytes of a
    declared full length; ``refuse = code`` answers every request with that error (a proxy that
    refuses). Records the Range header of each request."""

    def __init__(self):
        self.files, self.cut, self.refuse, self.ranges = {}, {}, None, []
        publisher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (http.server's name)
                publisher.ranges.append(self.headers.get("Range"))
                if publisher.refuse:
                    self.send_error(publisher.refuse)
                    return
                data = publisher.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = publisher.cut.pop(self.path, None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, name, data: bytes):
        self.files[urllib.parse.urlsplit(references.get_reference(name).url).path] = data


@pytest.fixture
def publisher(tmp_path, monkeypatch):
    server = Publisher()
    monkeypatch.setenv("FASTFID_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(references.MIRROR_VARIABLE, server.url)
    yield server
    server.server.shutdown()
    server.server.server_close()


def npz_bytes(**arrays) -> bytes:
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()


def gaussian(rng, d, shift=0.0, n=None):
    x = rng.standard_normal((n or 4 * d, d)) + shift
    return x.mean(0), np.cov(x, rowvar=False)


# --- the table --------------------------------------------------------------------------------------
def test_clean_fids_addresses_are_the_ones_its_own_code_builds(monkeypatch, tmp_path):
    features = pytest.importorskip("cleanfid.features")
    asked = []

    def record(local_folder, url):  # clean-fid's downloader, replaced: the URL it was asked for
        asked.append(url)
        path = tmp_path / "stats.npz"
        np.savez(path, mu=np.zeros(2), sigma=np.eye(2), feats=np.zeros((2, 2)))
        return str(path)

    monkeypatch.setattr(features, "check_download_url", record)
    entries = [r for r in references.REFERENCES.values() if r.publisher == "clean-fid"]
    for entry in entries:
        _, dataset, split, resolution, mode, *kid = entry.name.split("/")
        features.get_reference_statistics(dataset, int(resolution), mode=mode, split=split,
                                          metric="KID" if kid else "FID")
        assert asked[-1] == entry.url, entry.name
    # clean-fid's README: 19 configurations in 3 modes, 2 of them in clean only; KID for 5 datasets.
    assert len(entries) == 17 * 3 + 2 + 5 * 3


def test_every_publisher_is_listed_with_what_each_file_holds():
    table = references.REFERENCES
    assert {r.publisher for r in table.values()} == {"clean-fid", "edm", "edm2", "adm"}
    assert [n for n in table if n.startswith("edm/")] == ["edm/cifar10-32x32", "edm/ffhq-64x64", "edm/afhqv2-64x64",
                                                          "edm/imagenet-64x64"]
    assert table["edm2/img512"].url == "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img512.pkl"
    assert table["adm/imagenet256"].url == ("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/"
                                            "imagenet/256/VIRTUAL_imagenet256_labeled.npz")
    assert table["edm2/img512"].resize_for("dinov2-vit-l14") == "edm2"
    assert table["clean-fid/cifar10/train/32/legacy_pytorch"].resize == "pytorch-fid"
    assert all(r.sha256 is None for r in table.values())  # none of the four publishes one
    with pytest.raises(ValueError, match="unknown reference 'edm/cifar100'; edm's include edm/cifar10-32x32"):
        references.get_reference("edm/cifar100")


# --- fetching -----------------------------------------------------------------------------------------
def test_a_reference_is_fetched_checked_and_kept_with_its_hash(publisher, rng, tmp_path):
    mu, sigma = gaussian(rng, 6)
    publisher.serve("edm/cifar10-32x32", npz_bytes(mu=mu, sigma=sigma))
    path = references.fetch("edm/cifar10-32x32", progress=False)
    assert path == tmp_path / "home" / "references" / "edm" / "cifar10-32x32.npz"
    assert (path.parent / "cifar10-32x32.npz.sha256").read_text().split()[0] == file_sha256(path)
    assert publisher.ranges == [None]
    assert references.fetch("edm/cifar10-32x32", progress=False) == path  # already here: not fetched again
    assert len(publisher.ranges) == 1
    # Changed since: refused at the next read, in one line.
    with np.load(path) as data:
        changed = npz_bytes(mu=data["mu"] + 1, sigma=data["sigma"])
    path.write_bytes(changed)
    with pytest.raises(OSError, match="changed since it was fetched .* refused; delete it and `fastfid references "
                                      "fetch edm/cifar10-32x32` again"):
        references.reference_path("edm/cifar10-32x32")


def test_a_cut_transfer_resumes_where_it_stopped(publisher, rng):
    mu, sigma = gaussian(rng, 40)
    data = npz_bytes(mu=mu, sigma=sigma)
    publisher.serve("clean-fid/cifar10/train/32/clean", data)
    path = urllib.parse.urlsplit(references.get_reference("clean-fid/cifar10/train/32/clean").url).path
    publisher.cut[path] = 5000
    with pytest.raises(OSError, match="cannot download reference clean-fid/cifar10/train/32/clean from .*: run the "
                                      "same command again to resume"):
        references.fetch("clean-fid/cifar10/train/32/clean", progress=False)
    kept = references.fetch("clean-fid/cifar10/train/32/clean", progress=False)
    assert publisher.ranges == [None, "bytes=5000-"]  # the second request asked for the rest only
    assert kept.read_bytes() == data
    assert not (kept.parent / ".partial" / kept.name).exists()


@pytest.mark.parametrize("content, message", [
    ({"mu": np.zeros(3), "sigma": -np.eye(3)}, "not positive semidefinite"),
    ({"mu": np.zeros(3), "sigma": np.full((3, 3), np.nan)}, "NaN"),
    ({"mean": np.zeros(3)}, "mu"),
])
def test_a_file_that_is_not_a_usable_reference_is_not_kept(publisher, content, message):
    publisher.serve("edm/ffhq-64x64", npz_bytes(**content))
    with pytest.raises(ValueError, match=f"is not a usable edm/ffhq-64x64: .*{message}.*; it was not kept"):
        references.fetch("edm/ffhq-64x64", progress=False)
    folder = references.references_dir() / "edm"
    assert [p for p in folder.rglob("*") if p.is_file()] == []


def test_offline_or_refused_says_the_url_the_file_and_the_folder(publisher):
    publisher.refuse = 403
    name = "adm/imagenet256"
    with pytest.raises(OSError) as caught:
        references.fetch(name, progress=False)
    message = str(caught.value)
    assert "HTTP 403" in message and "/diffusion/jul-2021/ref_batches/imagenet/256/VIRTUAL_imagenet256_labeled.npz" \
        in message
    assert f"put VIRTUAL_imagenet256_labeled.npz in {references.references_dir() / 'adm'}" in message
    assert main(["references", "fetch", name, "--quiet"]) == 1  # the CLI: that one line


def test_a_file_put_there_by_hand_is_checked_and_recorded_at_its_first_read(publisher, rng):
    mu, sigma = gaussian(rng, 5)
    target = references.references_dir() / "edm" / "afhqv2-64x64.npz"
    target.parent.mkdir(parents=True)
    target.write_bytes(npz_bytes(mu=mu, sigma=sigma))
    assert references.reference_path("edm/afhqv2-64x64") == target
    assert publisher.ranges == []  # nothing downloaded
    assert (target.parent / "afhqv2-64x64.npz.sha256").is_file()


# --- a name wherever a statistics file is taken -------------------------------------------------------
def test_a_name_is_taken_wherever_a_statistics_file_is(publisher, rng, tmp_path, capsys):
    mu, sigma = gaussian(rng, 8)
    gen_mu, gen_sigma = gaussian(rng, 8, shift=0.2)
    publisher.serve("edm/cifar10-32x32", npz_bytes(mu=mu, sigma=sigma))
    expected = fastfid.frechet_distance(gen_mu, gen_sigma, mu, sigma)
    bound = 1e-12 * (np.trace(sigma) + np.trace(gen_sigma))  # the same exact route on the same arrays
    assert abs(fastfid.fid((gen_mu, gen_sigma), "edm/cifar10-32x32") - expected) <= bound
    assert abs(fastfid.Reference("edm/cifar10-32x32").distance((gen_mu, gen_sigma)) - expected) <= bound
    np.savez(tmp_path / "gen.npz", mu=gen_mu, sigma=gen_sigma)
    result = fastfid.compute_fid(tmp_path / "gen.npz", "edm/cifar10-32x32", progress=False)
    assert abs(result.value - expected) <= bound
    assert main(["fid", str(tmp_path / "gen.npz"), "edm/cifar10-32x32", "--json", "--quiet"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["fid"] - expected) <= bound
    # EDM2's pickle by name: both spaces.
    publisher.serve("edm2/img512", pickle.dumps({"num_images": 100, "fid": {"mu": mu, "sigma": sigma},
                                                 "fd_dinov2": {"mu": mu[:4], "sigma": sigma[:4, :4]}}))
    assert list(fastfid.load_spaces("edm2/img512")) == ["inception", "dinov2-vit-l14"]


def test_the_references_preprocessing_is_applied_and_another_is_refused():
    from fastfid.extraction import _reference_resize

    assert _reference_resize(("gen/", "clean-fid/ffhq/trainval70k/256/clean"), None, 2048, None, None) == "clean"
    assert _reference_resize(("gen/", "edm2/img512"), "dinov2-vit-l14", "dinov2-vit-l14", None, None) == "edm2"
    assert _reference_resize(("gen/", "edm/cifar10-32x32"), None, 2048, None, None) == "legacy_tensorflow"
    assert _reference_resize(("gen/", "other.npz"), None, 2048, None, "clean") == "clean"  # no reference named
    with pytest.raises(ValueError, match="preprocessed by 'clean'; resize='pytorch-fid' would give other features"):
        _reference_resize(("gen/", "clean-fid/ffhq/trainval70k/256/clean"), None, 2048, None, "pytorch-fid")
    with pytest.raises(ValueError, match="holds clean-fid's KID features, not FID statistics"):
        _reference_resize(("gen/", "clean-fid/brecahad/train/512/clean/kid"), None, 2048, None, None)
    with pytest.raises(ValueError, match="edm/cifar10-32x32 holds statistics of inception, not of dinov2-vit-l14"):
        _reference_resize(("gen/", "edm/cifar10-32x32"), "dinov2-vit-l14", "dinov2-vit-l14", None, None)


def test_fdr_against_a_named_reference_preprocesses_each_space_as_its_publisher():
    from fastfid.cli import _references_modes

    spaces = ["inception", "dinov2-vit-l14"]
    assert _references_modes(["gen/", "edm2/img512"], spaces, None) == {"inception": "legacy_tensorflow",
                                                                          "dinov2-vit-l14": "edm2"}
    assert _references_modes(["gen/", "edm2/img512"], spaces, "edm2")["dinov2-vit-l14"] == "edm2"
    with pytest.raises(ValueError, match="edm2/img512's dinov2-vit-l14 statistics are of images preprocessed by "
                                         "'edm2', not 'dgm-eval'"):
        _references_modes(["gen/", "edm2/img512"], spaces, "dgm-eval")
    with pytest.raises(ValueError, match="holds statistics of inception, dinov2-vit-l14, not of clip-vit-l-14"):
        _references_modes(["gen/", "edm2/img512"], ["clip-vit-l-14"], None)
    assert _references_modes(["gen/", "ref.npz"], spaces, "clean") == "clean"


def test_the_list_says_what_is_here(publisher, rng, capsys):
    mu, sigma = gaussian(rng, 4)
    publisher.serve("edm/cifar10-32x32", npz_bytes(mu=mu, sigma=sigma))
    assert main(["references", "fetch", "edm/cifar10-32x32", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["references", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert len(rows) == len(references.REFERENCES)
    assert rows["edm/cifar10-32x32"]["bytes"] > 0 and rows["edm/ffhq-64x64"]["cached"] is None
    assert main(["references"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("edm/cifar10-32x32") and "bytes" in line for line in lines)


def test_clean_fids_dataset_arguments_fetch_its_hosted_files(publisher, rng):
    pytest.importorskip("torch")
    from fastfid.compat import cleanfid

    mu, sigma = gaussian(rng, 6)
    feats = rng.standard_normal((30, 6))
    publisher.serve("clean-fid/cifar10/train/32/clean", npz_bytes(mu=mu, sigma=sigma))
    publisher.serve("clean-fid/afhq_cat/train/512/legacy_tensorflow/kid", npz_bytes(feats=feats))
    stats = cleanfid._reference("CIFAR10", 32, "train", "clean", "inception_v3")  # clean-fid lowercases the name
    assert np.array_equal(stats.mean, mu) and np.array_equal(stats.cov, sigma)
    assert np.array_equal(cleanfid._reference("afhq_cat", 512, "train", "legacy_tensorflow", "inception_v3", "KID"),
                          feats)
    with pytest.raises(ValueError, match="clean-fid hosts cifar10 as split/resolution test/32, train/32"):
        cleanfid._reference("cifar10", 1024, "train", "clean", "inception_v3")



@pytest.mark.slow
def test_adms_evaluator_takes_a_reference_batch_by_name(publisher, rng, tmp_path, peer_weights, capsys):
    pytest.importorskip("torch")
    publisher.serve("adm/imagenet256", npz_bytes(arr_0=rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)))
    np.savez(tmp_path / "samples.npz", arr_0=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    assert main(["adm", "adm/imagenet256", str(tmp_path / "samples.npz"), "--weights", str(peer_weights),
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"inception_score", "fid", "sfid", "precision", "recall"} <= set(result)
    assert (references.references_dir() / "adm" / "VIRTUAL_imagenet256_labeled.npz").is_file()
