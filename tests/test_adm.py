"""ADM's evaluator's pieces (fastfid.adm): its three activations against torch-fidelity's own
Inception hooked at the same layer, its Inception Score against a float32 numpy computation of its
formula, and its batches read from .npz files image by image, with every bad input named."""

import tracemalloc
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from fastfid.adm import ADMInception, ImageBatch, activations, inception_score  # noqa: E402


def uint8_images(rng, n, size=64):
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.mark.slow
def test_the_activations_equal_torch_fidelitys_inception_hooked_at_the_same_layer(rng, peer_weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    images = uint8_images(rng, 5, size=80)
    ours = activations(images, weights=peer_weights, device="cpu", batch_size=2)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(peer_weights))
    theirs.eval()
    kept = {}
    theirs.Mixed_6d.branch1x1.register_forward_hook(lambda module, inputs, output: kept.update(map=output))
    with torch.no_grad():
        pool, logits = theirs(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    spatial = kept["map"][:, :7].permute(0, 2, 3, 1).reshape(5, -1)  # ADM's [..., :7], flattened H, W, C
    assert ours.pool.shape == (5, 2048) and ours.spatial.shape == (5, 2023) and ours.logits.shape == (5, 1008)
    # Two float32 implementations of one network (convolution orders differ): 1e-5 of each output's scale.
    for mine, peer in ((ours.pool, pool), (ours.spatial, spatial), (ours.logits, logits)):
        peer = peer.numpy()
        np.testing.assert_allclose(mine, peer, rtol=0, atol=1e-5 * np.abs(peer).max())
    # The H, W, C order, not C, H, W: the other order differs.
    wrong = kept["map"][:, :7].reshape(5, -1).numpy()
    assert np.abs(ours.spatial - wrong).max() > 1e-2 * np.abs(wrong).max()


def adm_inception_score_numpy(logits: np.ndarray) -> float:
    """ADM's evaluator's formula in float32 numpy: softmax, contiguous 5,000-row splits, mean."""
    logits = logits.astype(np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    scores = []
    for start in range(0, len(probabilities), 5000):
        part = probabilities[start:start + 5000]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def test_the_inception_score_is_adms_with_contiguous_splits_of_5000(rng):
    logits = (rng.standard_normal((12_000, 100)) * 3).astype(np.float32)  # splits of 5,000, 5,000, 2,000
    expected = adm_inception_score_numpy(logits)
    # float32 sums in torch's order and numpy's pairwise one: ~1e-6 relative, far below a split's effect.
    assert inception_score(logits) == pytest.approx(expected, rel=1e-5)
    # fastfid's usual score splits 12,000 into 10 near-equal parts (and in float64): another number.
    from fastfid.metrics import inception_score_from_logits

    usual = inception_score_from_logits(logits, splits=10).mean
    assert abs(usual - expected) > 1e-3 * expected
    with pytest.raises(ValueError, match="NaN or Inf"):
        inception_score(np.full((3, 4), np.nan))


@pytest.mark.parametrize("compressed", [False, True])
def test_a_batch_file_is_read_image_by_image_as_the_array(rng, tmp_path, compressed):
    images = uint8_images(rng, 11, size=16)
    path = tmp_path / "batch.npz"
    (np.savez_compressed if compressed else np.savez)(path, arr_0=images)
    source = ImageBatch(path)
    assert len(source) == 11 and source.shape == (11, 16, 16, 3)
    parts = list(source.batches(4))
    assert [len(p) for p in parts] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(parts), images)
    assert source.statistics() is None


def test_reading_a_large_batch_keeps_memory_to_a_batch(rng, tmp_path):
    images = np.zeros((512, 128, 128, 3), dtype=np.uint8)  # 25 MB in the file
    images[:, 0, 0, 0] = np.arange(512) % 256
    path = tmp_path / "large.npz"
    np.savez(path, arr_0=images)
    del images
    tracemalloc.start()
    try:
        total = sum(int(batch[:, 0, 0, 0].astype(np.int64).sum()) for batch in ImageBatch(path).batches(16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == sum(np.arange(512) % 256)
    assert peak < 4 * 16 * 128 * 128 * 3  # a few batches of 0.8 MB, never the 25 MB array


def test_stored_statistics_are_read_and_half_of_them_refused(rng, tmp_path):
    images = uint8_images(rng, 4, size=8)
    full = tmp_path / "reference.npz"
    stats = {"mu": np.zeros(2048), "sigma": np.eye(2048), "mu_s": np.ones(2023), "sigma_s": np.eye(2023)}
    np.savez(full, arr_0=images, **stats)
    stored = ImageBatch(full).statistics()
    np.testing.assert_array_equal(stored.mu_s, np.ones(2023))
    half = tmp_path / "half.npz"
    np.savez(half, arr_0=images, mu=stats["mu"], sigma=stats["sigma"])
    with pytest.raises(ValueError, match=r"half.npz has mu, sigma but not mu_s, sigma_s"):
        ImageBatch(half).statistics()


def bad_files(tmp_path, rng):
    good = uint8_images(rng, 4, size=8)
    cases = {}
    cases["not a zip"] = tmp_path / "text.npz"
    cases["not a zip"].write_text("hello")
    cases["no arr_0"] = tmp_path / "other.npz"
    np.savez(cases["no arr_0"], images=good)
    cases["float"] = tmp_path / "float.npz"
    np.savez(cases["float"], arr_0=good.astype(np.float32))
    cases["grey"] = tmp_path / "grey.npz"
    np.savez(cases["grey"], arr_0=good[..., 0])
    cases["rgba"] = tmp_path / "rgba.npz"
    np.savez(cases["rgba"], arr_0=np.concatenate([good, good[..., :1]], axis=-1))
    cases["fortran"] = tmp_path / "fortran.npz"
    np.savez(cases["fortran"], arr_0=np.asfortranarray(good))
    cases["truncated"] = tmp_path / "truncated.npz"
    np.savez(cases["truncated"], arr_0=good)
    with zipfile.ZipFile(cases["truncated"]) as archive:
        data = archive.read("arr_0.npy")
    with zipfile.ZipFile(cases["truncated"], "w") as archive:
        archive.writestr("arr_0.npy", data[:-100])
    return cases


@pytest.mark.parametrize("case,message", [
    ("not a zip", r"text.npz is not an .npz file"),
    ("no arr_0", r"other.npz has no arr_0 \(ADM's images; it holds images\)"),
    ("float", r"float.npz: arr_0 holds float32; ADM's batches are uint8 images"),
    ("grey", r"grey.npz: arr_0 has shape \(4, 8, 8\); ADM's batches are NHWC RGB"),
    ("rgba", r"rgba.npz: arr_0 has shape \(4, 8, 8, 4\)"),
    ("fortran", r"fortran.npz: arr_0 is stored in Fortran order"),
    ("truncated", r"truncated.npz: arr_0 ends early"),
])
def test_bad_batch_files_are_named_in_one_line(tmp_path, rng, case, message):
    path = bad_files(tmp_path, rng)[case]
    with pytest.raises(ValueError, match=message):
        list(ImageBatch(path).batches(3))


def test_an_array_of_the_wrong_kind_is_refused(rng):
    with pytest.raises(ValueError, match=r"the images: arr_0 holds float64"):
        ImageBatch(rng.random((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        activations(uint8_images(rng, 2, size=8), weights=False, batch_size=0)


def test_the_network_is_the_fid_inception_with_tensorflow_scaling():
    net = ADMInception(weights=False, device="cpu")
    assert net.model.scaling == "tensorflow" and net.weights_name == "random"
