import json

import numpy as np
import pytest

import fastfid
from fastfid import cli
from fastfid.representations import fdr
from support.features import relu_features


@pytest.fixture
def spaces(rng, tmp_path):
    """Two spaces of different scale, each with generated, reference and validation statistics."""
    paths = {}
    for name, d, scale in (("small", 5, 1.0), ("large", 9, 30.0)):
        for role, offset in (("gen", 0.4), ("ref", 0.0), ("val", 0.05)):
            path = tmp_path / f"{name}_{role}.npz"
            fastfid.FeatureStats.from_features(scale * relu_features(rng, 800, d, offset=offset)).save(path)
            paths[name, role] = str(path)
    return paths


def test_fdr_is_the_mean_of_the_normalised_distances(spaces):
    result = fdr({name: (spaces[name, "gen"], spaces[name, "ref"], spaces[name, "val"]) for name in ("small", "large")})
    ratios = []
    for name in ("small", "large"):
        fd = fastfid.fid(spaces[name, "gen"], spaces[name, "ref"])
        val = fastfid.fid(spaces[name, "val"], spaces[name, "ref"])
        assert result.spaces[name].fd == pytest.approx(fd, rel=1e-12)
        assert result.spaces[name].validation_fd == pytest.approx(val, rel=1e-12)
        ratios.append(fd / val)
    assert result.k == 2 and result.value == pytest.approx(np.mean(ratios), rel=1e-12)


def test_a_published_validation_fd(spaces):
    result = fdr({"small": (spaces["small", "gen"], spaces["small", "ref"], 1.68)})
    assert result.spaces["small"].ratio == pytest.approx(result.spaces["small"].fd / 1.68)


@pytest.mark.parametrize("spaces_arg,match", [
    ({}, "at least one space"),
    ({"a": (1, 2)}, "expected \\(generated, reference, validation\\)"),
])
def test_bad_spaces(spaces_arg, match):
    with pytest.raises(ValueError, match=match):
        fdr(spaces_arg)


def test_validation_fd_must_be_positive(spaces):
    with pytest.raises(ValueError, match="must be positive"):
        fdr({"small": (spaces["small", "gen"], spaces["small", "ref"], 0)})


def test_cli(spaces, capsys):
    argv = ["fdr"]
    for name in ("small", "large"):
        argv += ["--space", name, spaces[name, "gen"], spaces[name, "ref"], spaces[name, "val"]]
    assert cli.main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = fdr({name: (spaces[name, "gen"], spaces[name, "ref"], spaces[name, "val"]) for name in ("small", "large")})
    assert out["k"] == 2 and out["fdr"] == pytest.approx(expected.value, rel=1e-12)
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip().endswith(f"FDr^2: {expected.value:.6f}")
    assert cli.main(["fdr", "--space", "x", spaces["small", "gen"], spaces["small", "ref"], "2.5"]) == 0
    assert cli.main(["fdr", "--space", "x", "a", "b", "c", "--space", "x", "a", "b", "c"]) == 1
    assert "given twice" in capsys.readouterr().err
