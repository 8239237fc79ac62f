"""CMMD of embeddings (fastfid.mmd): against an independent float64 numpy implementation of the
original's formula, its reference saved with its own kernel sum and reloaded, and bad input named."""

import json

import numpy as np
import pytest

import fastfid
from fastfid.cli import main
from fastfid.mmd import Embeddings, cmmd


def numpy_cmmd(x, y, sigma=10.0, scale=1000.0) -> float:
    """google-research cmmd's distance.mmd in float64 numpy: full kernel matrices, every mean over all
    pairs (the diagonal included)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def mean_kernel(a, b):
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.exp(-squared / (2 * sigma**2)).mean()

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))


def unit_embeddings(rng, n, d=64, shift=0.0, dtype=np.float32):
    """L2-normalised, as CMMD's CLIP embeddings are."""
    z = rng.standard_normal((n, d)) + shift
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("shapes", [(300, 200), (1500, 1100), (1, 5)])  # one block, ragged blocks, a single row
def test_cmmd_is_the_originals_biased_formula_in_float64(rng, shapes):
    x, y = unit_embeddings(rng, shapes[0], shift=0.05), unit_embeddings(rng, shapes[1])
    expected = numpy_cmmd(x, y)
    # Both float64; the blocked sums and numpy's pairwise means round differently: 1e-10 of the terms'
    # scale (1000 × a mean kernel of about 1) covers it many times over.
    assert float(cmmd(x, y)) == pytest.approx(expected, abs=1e-10)
    result = fastfid.cmmd(x, y)
    assert (result.generated, result.reference, result.sigma, result.scale) == (shapes[0], shapes[1], 10.0, 1000.0)
    # The diagonal is included: the unbiased estimator differs.
    m, n = shapes
    if m > 1 and n > 1:
        unbiased = 1000 * fastfid._core.gaussian_mmd(x, y, 10.0)
        assert abs(unbiased - expected) > 1e-6


def test_other_sigmas_and_identical_sets(rng):
    x = unit_embeddings(rng, 400, d=32)
    assert float(cmmd(x, x)) == pytest.approx(0, abs=1e-10)
    y = unit_embeddings(rng, 300, d=32, shift=0.3)
    assert float(cmmd(x, y, sigma=0.5)) == pytest.approx(numpy_cmmd(x, y, sigma=0.5), abs=1e-10)
    assert float(cmmd(x, y, sigma=0.5, scale=1)) == pytest.approx(numpy_cmmd(x, y, sigma=0.5, scale=1), abs=1e-13)


def test_a_saved_reference_keeps_its_kernel_sum(rng, tmp_path, capsys):
    x, y = unit_embeddings(rng, 500), unit_embeddings(rng, 700, shift=0.1)
    reference = Embeddings(y, space="clip-vit-l-14-336")
    reference.save(tmp_path / "ref.npz")
    loaded = Embeddings.load(tmp_path / "ref.npz")
    assert loaded._self_sum == reference.self_sum and loaded.space == "clip-vit-l-14-336"
    assert np.array_equal(loaded.array, y)
    expected = numpy_cmmd(x, y)
    assert float(cmmd(x, tmp_path / "ref.npz")) == pytest.approx(expected, abs=1e-10)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert main(["cmmd", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json",
                 "--save-reference", str(tmp_path / "saved.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["cmmd"] == pytest.approx(expected, abs=1e-10)
    assert main(["cmmd", str(tmp_path / "x.npy"), str(tmp_path / "saved.npz")]) == 0
    assert capsys.readouterr().out.startswith("CMMD: ")
    torch = pytest.importorskip("torch")
    assert float(cmmd(torch.from_numpy(x), loaded)) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("x, message", [
    (np.zeros((4, 3, 2)), "must be a 2-D array of embeddings"),
    (np.zeros((0, 3)), "must be a 2-D array of embeddings"),
    (np.zeros((4, 3), dtype=np.int64), "must be floating point"),
    (np.full((4, 3), np.nan), "hold NaN or Inf"),
    (np.zeros((4, 5)), "the generated embeddings have 5 dims, the reference's 3"),
])
def test_bad_embeddings_are_named(x, message):
    with pytest.raises(ValueError, match=message):
        cmmd(x, np.zeros((4, 3)))


def test_a_file_that_is_not_embeddings_is_named(tmp_path):
    np.savez(tmp_path / "stats.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="is not a file of CMMD embeddings"):
        cmmd(np.zeros((4, 3)), tmp_path / "stats.npz")
    with pytest.raises(FileNotFoundError, match="images does not exist"):
        cmmd(np.zeros((4, 3)), tmp_path / "images")
    Embeddings(np.zeros((4, 3)), sigma=2.0).save(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="holds a kernel sum at sigma 2.0, not 10"):
        cmmd(np.zeros((4, 3)), tmp_path / "other.npz")


# --- from images, through the clip-vit-l-14-336 space -------------------------------------------------
def test_cmmd_of_images_embeds_them_as_the_original_does(tmp_path, monkeypatch, capsys):
    pytest.importorskip("timm")
    pytest.importorskip("open_clip")
    import support.spaces as support

    import fastfid.mmd

    case = support.clip336_case(tmp_path)  # a small network of the space's definition, OpenAI's layout
    monkeypatch.setattr(fastfid.mmd, "SPACE", case.space)
    first = support.write_images(tmp_path / "a", seed=1)
    second = support.write_images(tmp_path / "b", seed=2)
    from PIL import Image

    theirs = [case.reference([Image.open(p) for p in sorted(folder.glob("*.png"))]) for folder in (first, second)]
    options = dict(weights=case.weights, device="cpu", num_workers=0, progress=False)
    ours = [fastfid.mmd.embed(folder, **options).array for folder in (first, second)]
    for mine, reference in zip(ours, theirs):  # open_clip's tower, the original's preprocessing: 1e-5 (PARITY)
        np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours[0], axis=1), 1, atol=1e-12)  # L2-normalised
    value = float(fastfid.cmmd(first, second, **options))
    assert value == pytest.approx(numpy_cmmd(*theirs), abs=1e-6)  # the embeddings' 1e-5, through exp and × 1000
    # cmmd-pytorch's resize (torch's bicubic, no antialiasing) gives other embeddings of downscaled images.
    other = fastfid.mmd.embed(first, resize="cmmd-pytorch", **options).array
    assert np.abs(other - ours[0]).max() > 1e-4


def test_the_centre_square_and_cmmd_pytorchs_resize(rng):
    torch = pytest.importorskip("torch")
    from fastfid.data import resize_batch, resize_image

    image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)  # wide: the square is columns 20-109
    square = torch.from_numpy(image[:, 20:110]).permute(2, 0, 1)[None].float()
    expected = torch.nn.functional.interpolate(square, size=(60, 60), mode="bicubic", align_corners=False)
    ours = resize_image(image, (60, 60), "torch-bicubic-centre") * 255
    assert torch.allclose(ours, expected[0], atol=1e-3)
    tall = rng.integers(0, 256, (131, 90, 3), dtype=np.uint8)  # odd difference: the corner rounds down (row 20)
    batch = torch.from_numpy(tall).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(resize_batch(batch, (90, 90), "pil-bicubic-centre"), batch[..., 20:110, :])
