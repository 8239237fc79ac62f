"""Several representation spaces from one pass over the images: compute_stats(model=[...]),
SpaceStats files (save, load, merge, checkpoints), the refusal of different spaces, `fastfid stats
--spaces` and `fastfid fdr GENERATED REFERENCE --spaces` against fastfid.fdr on the same statistics."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
for _library in ("timm", "transformers", "open_clip", "safetensors"):
    pytest.importorskip(_library, reason=f"{_library} is not installed (pip install 'fastfid[spaces]' and the test extras)")

import fastfid  # noqa: E402
import support.spaces as support  # noqa: E402
from fastfid import cli  # noqa: E402
from fastfid.models import spaces as registry  # noqa: E402
from fastfid.representations import SpaceStats  # noqa: E402

OPTIONS = dict(device="cpu", num_workers=0, progress=False, batch_size=2)
NAMES = ["inception", "dinov2-vit-l14", "clip-vit-l-14"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, peer_weights):
    """Small DINOv2-L and CLIP-L definitions with their weight files, Inception's random weights, and
    two image folders (generated, real)."""
    root = tmp_path_factory.mktemp("spaces_pass")
    (root / "dinov2").mkdir()
    (root / "clip").mkdir()
    dinov2, clip = support.dinov2_case(root / "dinov2"), support.clip_case(root / "clip")
    return dict(spaces={"dinov2-vit-l14": dinov2.space, "clip-vit-l-14": clip.space},
                weights={"inception": str(peer_weights), "dinov2-vit-l14": str(dinov2.weights),
                         "clip-vit-l-14": str(clip.weights)},
                generated=support.write_images(root / "generated", seed=11),
                real=support.write_images(root / "real", seed=12, shapes=[(120, 90)] * 3 + [(256, 320)] * 4))


@pytest.fixture
def small_spaces(setup, monkeypatch):
    """The registry's DINOv2-L and CLIP-L at the small size, so that their names build them."""
    for name, space in setup["spaces"].items():
        monkeypatch.setitem(registry.SPACES, name, space)
    return setup


def test_one_pass_decodes_each_image_once_and_matches_separate_runs(small_spaces, monkeypatch):
    import PIL.Image

    setup = small_spaces
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    together = fastfid.compute_stats(setup["generated"], model=NAMES, weights=setup["weights"], **OPTIONS)
    assert isinstance(together, SpaceStats) and list(together) == NAMES
    assert len(opened) == 5  # five images, three networks: each decoded once
    for name in NAMES:
        alone = fastfid.compute_stats(setup["generated"], model=name, weights=setup["weights"][name], **OPTIONS)
        assert together[name].count == alone.count == 5
        assert together[name].feature_space == alone.feature_space
        # the same images through the same network in the same batches: the same sums
        np.testing.assert_array_equal(together[name].mean, alone.mean)
        np.testing.assert_array_equal(together[name].cov, alone.cov)
    assert together["inception"].dim == 2048 and together["dinov2-vit-l14"].dim == support.WIDTH
    with pytest.raises(ValueError, match="different representation spaces: dinov2-vit-l14 .* and clip-vit-l-14"):
        fastfid.fid(together["dinov2-vit-l14"], together["clip-vit-l-14"])
    other = fastfid.FeatureStats.from_features(np.random.default_rng(0).standard_normal((3000, 2048)))
    other.feature_space = together["dinov2-vit-l14"].feature_space  # as wide as Inception, another network
    with pytest.raises(ValueError, match="different representation spaces: inception"):
        fastfid.fid(together["inception"], other)


def test_space_files_round_trip_merge_by_shard_and_are_not_read_as_one_space(small_spaces, tmp_path):
    setup = small_spaces
    options = dict(model=NAMES[1:], weights={k: setup["weights"][k] for k in NAMES[1:]}, **OPTIONS)
    whole = fastfid.compute_stats(setup["real"], **options)
    parts = [fastfid.compute_stats(setup["real"], shard=(i, 2), **options) for i in range(2)]
    for i, part in enumerate(parts):
        part.save(tmp_path / f"part{i}.npz")
    merged = parts[0].merge(parts[1])
    for name in NAMES[1:]:
        np.testing.assert_allclose(merged[name].mean, whole[name].mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(merged[name].cov, whole[name].cov, rtol=1e-10, atol=1e-14)
    whole.validation_fd["dinov2-vit-l14"] = 14.19
    whole.save(tmp_path / "ref.npz")
    loaded = fastfid.load_spaces(tmp_path / "ref.npz")
    assert list(loaded) == NAMES[1:] and loaded.validation_fd == {"dinov2-vit-l14": 14.19}
    for name in NAMES[1:]:
        assert loaded[name].count == whole[name].count and loaded[name].feature_space == whole[name].feature_space
        np.testing.assert_array_equal(loaded[name].cov, whole[name].cov)  # the exact state is stored
    with pytest.raises(ValueError, match=r"holds statistics of 2 spaces \(dinov2-vit-l14, clip-vit-l-14\)"):
        fastfid.FeatureStats.load(tmp_path / "ref.npz")
    for record in ("[1]", '{"spaces": [3], "validation_fd": {}}', '{"spaces": ["a", "a"], "validation_fd": {}}'):
        np.savez(tmp_path / "bad.npz", fastfid_spaces=np.str_(record), space0=np.zeros(3, np.uint8))
        for read in (fastfid.load_spaces, fastfid.FeatureStats.load):  # a damaged record is an OSError, never a crash
            with pytest.raises(OSError, match="has a corrupt list of spaces"):
                read(tmp_path / "bad.npz")
    assert cli.main(["merge", str(tmp_path / "part0.npz"), str(tmp_path / "part1.npz"), "-o",
                     str(tmp_path / "merged.npz")]) == 0
    np.testing.assert_allclose(fastfid.load_spaces(tmp_path / "merged.npz")["clip-vit-l-14"].cov,
                               whole["clip-vit-l-14"].cov, rtol=1e-10, atol=1e-14)


def test_a_failed_pass_resumes_from_its_checkpoint(small_spaces, tmp_path):
    setup = small_spaces
    folder = tmp_path / "images"
    shutil.copytree(setup["real"], folder)
    damaged = sorted(folder.glob("*.png"))[4]
    good = damaged.read_bytes()
    damaged.write_bytes(good[:40])  # truncated: the third batch fails
    options = dict(model=NAMES[1:], weights={k: setup["weights"][k] for k in NAMES[1:]}, **OPTIONS)
    with pytest.raises(OSError, match="cannot read image") as caught:
        fastfid.compute_stats(folder, checkpoint=tmp_path / "run.npz", checkpoint_every=0, **options)
    assert "4 of 7 images done" in " ".join(getattr(caught.value, "__notes__", []))
    damaged.write_bytes(good)
    resumed = fastfid.compute_stats(folder, checkpoint=tmp_path / "run.npz", resume=True, **options)
    straight = fastfid.compute_stats(setup["real"], **options)
    for name in NAMES[1:]:
        assert resumed[name].count == 7
        np.testing.assert_allclose(resumed[name].cov, straight[name].cov, rtol=1e-10, atol=1e-14)


def test_fdr_from_images_equals_fdr_on_the_same_statistics(small_spaces, tmp_path, capsys):
    setup = small_spaces
    weights = [f"--weights={name}={path}" for name, path in setup["weights"].items()]
    spaces = "--spaces=" + ",".join(NAMES)
    common = ["--device", "cpu", "--num-workers", "0", "--quiet", "--batch-size", "3", *weights, spaces]
    assert cli.main(["stats", str(setup["real"]), "-o", str(tmp_path / "ref.npz"), *common,
                     "--valfd", "inception=1.68", "--valfd", "dinov2-vit-l14=14.19"]) == 0
    capsys.readouterr()
    assert cli.main(["fdr", str(setup["generated"]), str(tmp_path / "ref.npz"), *common,
                     "--valfd", "clip-vit-l-14=5.6", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    reference = fastfid.load_spaces(tmp_path / "ref.npz")
    assert reference.validation_fd == {"inception": 1.68, "dinov2-vit-l14": 14.19}
    generated = fastfid.compute_stats(setup["generated"], model=NAMES, weights=setup["weights"], **{**OPTIONS,
                                                                                                   "batch_size": 3})
    expected = fastfid.fdr({name: (generated[name], reference[name], valfd) for name, valfd in
                            (("inception", 1.68), ("dinov2-vit-l14", 14.19), ("clip-vit-l-14", 5.6))})
    assert printed["k"] == 3 and printed["fdr"] == pytest.approx(expected.value, rel=1e-12)
    for name in NAMES:
        assert printed["spaces"][name]["fd"] == pytest.approx(expected.spaces[name].fd, rel=1e-12)
    assert expected.value == pytest.approx(np.mean([r.fd / r.validation_fd for r in expected.spaces.values()]))
    # the statistics of the generated images, saved and given instead of the folder: the same numbers
    generated.save(tmp_path / "gen.npz")
    assert cli.main(["fdr", str(tmp_path / "gen.npz"), str(tmp_path / "ref.npz"), spaces, "--valfd=clip-vit-l-14=5.6",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fdr"] == pytest.approx(expected.value, rel=1e-12)
    # one space of the reference file, against images, by `fastfid fid --space`
    assert cli.main(["fid", str(setup["generated"]), str(tmp_path / "ref.npz"), "--space", "clip-vit-l-14",
                     f"--weights={setup['weights']['clip-vit-l-14']}", "--device", "cpu", "--num-workers", "0",
                     "--quiet", "--batch-size", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fid"] == pytest.approx(expected.spaces["clip-vit-l-14"].fd, rel=1e-12)
    # a space without a valFD anywhere: one line that says how to give it
    assert cli.main(["fdr", str(tmp_path / "gen.npz"), str(tmp_path / "ref.npz"), spaces]) == 1
    assert "no valFD for clip-vit-l-14: give it (--valfd NAME=VALUE" in capsys.readouterr().err


def test_bad_space_lists_fail_in_one_line(small_spaces, tmp_path, capsys):
    setup = small_spaces
    assert cli.main(["stats", str(setup["real"]), "-o", str(tmp_path / "x.npz"), "--spaces", "inception,dinov3",
                     "--quiet"]) == 1
    assert "unknown representation space 'dinov3'" in capsys.readouterr().err
    assert cli.main(["stats", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npz"), "--spaces", "inception"]) == 1
    assert "--spaces computes statistics of images" in capsys.readouterr().err
    assert cli.main(["fdr", str(tmp_path / "x.npy"), str(tmp_path / "y.npz"), "--spaces", "inception"]) == 1
    assert "fdr reads images (a folder or zip) or statistics of the spaces" in capsys.readouterr().err
    with pytest.raises(ValueError, match="space 'clip-vit-l-14' is named twice"):
        fastfid.compute_stats(setup["real"], model=["clip-vit-l-14", "clip-vit-l-14"], **OPTIONS)
    with pytest.raises(ValueError, match="weights maps space names to files"):
        fastfid.compute_stats(setup["real"], model=["clip-vit-l-14"], weights="x.pth", **OPTIONS)
    with pytest.raises(ValueError, match="resize 'clean' applies to none of dinov2-vit-l14"):
        fastfid.compute_stats(setup["real"], model=["dinov2-vit-l14"], resize="clean", **OPTIONS)


def test_networks_that_resize_alike_share_one_resize(small_spaces, monkeypatch):
    from fastfid.extraction import SpaceExtractors

    monkeypatch.setitem(registry.SPACES, "mae-vit-l-16", support.tiny("mae-vit-l-16", embed_dim=32, depth=1, num_heads=2))
    names = ["dinov2-vit-l14", "clip-vit-l-14", "mae-vit-l-16"]
    extractors = SpaceExtractors(names, weights={name: False for name in names}, device="cpu")
    # DINOv2 and MAE both squash to 224 × 224 by PIL's bicubic; CLIP crops: two resizes for three networks
    assert extractors.plans == (((224, 224), "pil-bicubic-squash"), ((224, 224), "pil-bicubic-crop"))
    views = (torch.rand(2, 3, 224, 224), torch.rand(2, 3, 224, 224))
    features = extractors(views)
    assert [f.shape[1] for f in features] == [support.WIDTH, support.WIDTH, 32]
    np.testing.assert_array_equal(features[2].numpy(), extractors.extractors[2](views[0])[0].numpy())
