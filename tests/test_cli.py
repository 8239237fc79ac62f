import json
import subprocess
import sys

import numpy as np
import pytest

import fastfid
from fastfid.cli import main
from conftest import relu_features


@pytest.fixture
def features(rng, tmp_path):
    a, b = relu_features(rng, 800, 16).astype(np.float32), relu_features(rng, 500, 16, offset=0.3)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    return tmp_path, a, b


def test_stats_then_fid(features, capsys):
    folder, a, b = features
    assert main(["stats", str(folder / "a.npy"), "-o", str(folder / "a.npz"), "--batch-size", "100"]) == 0
    assert main(["stats", str(folder / "b.npy"), "-o", str(folder / "b.npz")]) == 0
    capsys.readouterr()
    assert main(["fid", str(folder / "a.npz"), str(folder / "b.npz")]) == 0
    expected = fastfid.fid(fastfid.FeatureStats.from_features(a), fastfid.FeatureStats.from_features(b))
    out = capsys.readouterr().out
    assert out.startswith("FID: ") and float(out.split()[1]) == pytest.approx(expected, abs=1e-6)


def test_fid_json(features, capsys):
    folder, a, b = features
    fastfid.FeatureStats.from_features(a).save(folder / "a.npz")
    fastfid.FeatureStats.from_features(b).save(folder / "b.npz")
    assert main(["fid", str(folder / "a.npz"), str(folder / "b.npz"), "--json", "--method", "newton_schulz"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "newton_schulz" and report["converged"]
    assert report["fid"] == pytest.approx(fastfid.fid(folder / "a.npz", folder / "b.npz"), rel=1e-10)


def test_merge_equals_stats_of_everything(features):
    folder, a, _ = features
    np.save(folder / "a1.npy", a[:300])
    np.save(folder / "a2.npy", a[300:])
    for part in ("a1", "a2"):
        assert main(["stats", str(folder / f"{part}.npy"), "-o", str(folder / f"{part}.npz")]) == 0
    assert main(["merge", str(folder / "a1.npz"), str(folder / "a2.npz"), "-o", str(folder / "all.npz")]) == 0
    merged = fastfid.FeatureStats.load(folder / "all.npz")
    whole = fastfid.FeatureStats.from_features(a)
    assert merged.count == 800
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=0, atol=1e-12 * np.abs(whole.cov).max())


def test_errors_exit_non_zero_with_a_message(features, capsys):
    folder, *_ = features
    assert main(["fid", str(folder / "missing.npz"), str(folder / "missing.npz")]) == 1
    assert "missing.npz" in capsys.readouterr().err
    (folder / "bad.npy").write_bytes(b"not numpy")
    assert main(["stats", str(folder / "bad.npy"), "-o", str(folder / "x.npz")]) == 1
    assert "not a readable .npy" in capsys.readouterr().err
    assert main(["stats", str(folder / "a.npy"), "-o", str(folder / "x.npz"), "--batch-size", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["fid", "only-one.npz"])


def test_module_entry_point(features):
    folder, a, _ = features
    fastfid.FeatureStats.from_features(a).save(folder / "a.npz")
    run = subprocess.run([sys.executable, "-m", "fastfid", "fid", str(folder / "a.npz"), str(folder / "a.npz")],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "FID: 0.000000"
