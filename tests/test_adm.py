"""ADM's evaluator's pieces (fastfid.adm): its three activations against torch-fidelity's own
Inception hooked at the same layer, its Inception Score against a float32 numpy computation of its
formula, and its batches read from .npz files image by image, with every bad input named."""

import json
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


# --- precision and recall in float16 -----------------------------------------------------------
from fastfid.adm import manifold  # noqa: E402


def relu_pool(rng, n, offset):
    """Pool3-like features: non-negative, decaying variances, 2048 wide."""
    z = rng.standard_normal((n, 2048)).astype(np.float32) * np.exp(-np.arange(2048) / 256).astype(np.float32)
    return np.maximum(z + offset, 0).astype(np.float32)


def reference_precision_recall(ref, sample, distances):
    """ADM's ManifoldEstimator in plain numpy, all at once: radii by sorting whole rows."""
    ref_radii = np.sort(distances(ref, ref), axis=1)[:, 3]
    sample_radii = np.sort(distances(sample, sample), axis=1)[:, 3]
    between = distances(ref, sample)
    return (float((between <= ref_radii[:, None]).any(axis=0).mean()),
            float((between <= sample_radii[None, :]).any(axis=1).mean()))


def numpy_half_distances(u, v):
    """ADM's float16 distances op by op in numpy, an independent model of the roundings: each op in
    float32 on half values, its result rounded to half (norms: fastfid's Eigen-ordered half sum)."""
    def half(x):
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)

    u16, v16 = half(u), half(v)
    norm_u, norm_v = (manifold.half_norms(x.astype(np.float16)).astype(np.float32) for x in (u16, v16))
    products = half(u16.astype(np.float64) @ v16.astype(np.float64).T)  # the exact sums, rounded once
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(half(half(norm_u[:, None] - half(2 * products)) + norm_v[None, :]), np.float32(0))


def half_distances_of(u, v):
    u16, v16 = u.astype(np.float16), v.astype(np.float16)
    return manifold.half_distances(u16, manifold.half_norms(u16), v16, manifold.half_norms(v16))


def test_the_torch_distances_are_the_numpy_model_of_each_rounding(rng):
    # Features on a grid whose products and their sums are exact in float32 whatever the order
    # (multiples of 1/8 below 3: sums of 1/64ths below 2^17; integers below 80: sums below 2^24),
    # so that the two agree bit for bit; the half roundings of the products, their doubling, the
    # differences and sums are then each tested. The integers' norms overflow half (inf, NaN).
    for top, unit in ((24, 8), (80, 1)):
        u, v = (rng.integers(0, top, (n, 2048)) * (rng.random((n, 2048)) < 0.5) / unit for n in (120, 90))
        u, v = u.astype(np.float32), v.astype(np.float32)
        model = numpy_half_distances(u, v)
        np.testing.assert_array_equal(half_distances_of(u, v), model)  # the native core's roundings
        u16, v16 = (torch.from_numpy(x.astype(np.float16).astype(np.float32)) for x in (u, v))
        norms = (torch.from_numpy(manifold.half_norms(x.astype(np.float16)).astype(np.float32)) for x in (u, v))
        torch_ops = manifold._torch_roundings(u16 @ v16.T, next(norms), next(norms)).numpy()  # the GPU's way
        np.testing.assert_array_equal(torch_ops, model)
        assert (top == 80) == (not np.isfinite(model).all())


def test_the_native_rounding_to_half_is_numpys_on_every_kind_of_float(rng):
    from fastfid import _core

    every_bit = rng.integers(0, 2**32, size=2_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    in_range = (rng.standard_normal(2_000_000) * np.exp(rng.uniform(-20, 12, 2_000_000))).astype(np.float32)
    edges = np.array([65504, 65519.996, 65520, 65536, -65520, 2**-14, 2**-24, 2**-25, 3 * 2**-26, 2**-26,
                      1.5 * 2**-24, 1 + 2**-11, 1 + 3 * 2**-11, np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=np.float32)
    x = np.concatenate([every_bit, in_range, edges])
    with np.errstate(over="ignore", invalid="ignore"):
        expected = x.astype(np.float16).astype(np.float32)
    ours = _core.round_to_half(x)
    np.testing.assert_array_equal(ours, expected)  # NaN where NaN; exact elsewhere
    assert np.array_equal(np.signbit(ours), np.signbit(expected))


def test_precision_recall_in_blocks_equal_adms_estimator_all_at_once_and_differ_from_float32(rng, monkeypatch):
    # Blocks of 64 and tiles of 16 over 150 and 130 points: ragged blocks in both directions.
    monkeypatch.setattr(manifold, "BLOCK", 64)
    monkeypatch.setattr(manifold, "TILE", 16)
    differs = False
    for offset in (0.3, 0.35, 0.4):
        ref, sample = relu_pool(rng, 150, 0.3), relu_pool(rng, 130, offset)
        ours = manifold.precision_recall(ref, sample)
        assert ours == reference_precision_recall(ref, sample, half_distances_of)
        differs |= ours != reference_precision_recall(ref, sample, manifold.float32_distances)
    assert differs  # float16 changes the counts on such features: why float32 ports are off


def test_a_block_with_a_non_finite_half_distance_is_computed_in_float32(rng):
    ref, sample = relu_pool(rng, 40, 0.3) * 20, relu_pool(rng, 30, 0.3) * 20  # norms beyond half's 65504
    assert not np.isfinite(manifold.half_norms(manifold._half(ref))).all()
    assert manifold.precision_recall(ref, sample) == reference_precision_recall(ref, sample,
                                                                                manifold.float32_distances)


def test_only_the_blocks_with_a_non_finite_half_distance_go_to_float32(rng, monkeypatch):
    # Blocks of 32 (tiles of 8) over 100 and 70 points; rows 40-49 of each set have norms beyond
    # half's range, so the blocks that meet them go to float32 and the others stay in half. The
    # radii take each set's products once for both orientations: the counts are ADM's all the same.
    monkeypatch.setattr(manifold, "BLOCK", 32)
    monkeypatch.setattr(manifold, "TILE", 8)
    ref, sample = relu_pool(rng, 100, 0.3), relu_pool(rng, 70, 0.32)
    ref[40:50] *= 20
    sample[40:50] *= 20

    kinds = set()

    def adm_blocks(u, v):
        out = np.empty((len(u), len(v)), dtype=np.float32)
        for r in range(0, len(u), 32):
            for c in range(0, len(v), 32):
                d = half_distances_of(u[r:r + 32], v[c:c + 32])
                kinds.add(bool(np.isfinite(d).all()))
                out[r:r + 32, c:c + 32] = d if np.isfinite(d).all() else manifold.float32_distances(u[r:r + 32],
                                                                                                     v[c:c + 32])
        return out

    expected = reference_precision_recall(ref, sample, adm_blocks)
    assert kinds == {True, False}  # blocks of both kinds
    assert manifold.precision_recall(ref, sample) == expected


def test_the_half_row_sum_follows_eigens_packets_step_by_step(rng):
    # An independent scalar walk of the documented order on 2,061 columns (two leaves, a packet tail
    # and a scalar tail), every add rounded to half.
    values = (rng.random((5, 2061)) * 3).astype(np.float16)

    def walk(row):
        if len(row) > 1024:
            split = 8 * -(-(len(row) // 2) // 8)
            return np.float16(np.float32(walk(row[:split])) + np.float32(walk(row[split:])))
        lanes = np.zeros((4, 8), dtype=np.float16)
        unrolled, whole = len(row) // 32 * 32, len(row) // 8 * 8
        for start in range(0, unrolled, 32):
            for a in range(4):
                for lane in range(8):
                    lanes[a, lane] = np.float16(np.float32(lanes[a, lane]) + np.float32(row[start + 8 * a + lane]))
        combined = lanes[0].copy()
        for a in range(1, 4):
            for lane in range(8):
                combined[lane] = np.float16(np.float32(combined[lane]) + np.float32(lanes[a, lane]))
        for start in range(unrolled, whole, 8):
            for lane in range(8):
                combined[lane] = np.float16(np.float32(combined[lane]) + np.float32(row[start + lane]))
        tail = np.float16(0)
        for value in row[whole:]:
            tail = np.float16(np.float32(tail) + np.float32(value))
        return np.float16(np.float32(tail) + np.float32(np.float16(combined.astype(np.float32).sum())))

    expected = np.array([walk(row) for row in values])
    np.testing.assert_array_equal(manifold._eigen_half_sum(values), expected)
    assert not np.array_equal(expected, values.astype(np.float32).sum(axis=1).astype(np.float16))  # order matters


def test_tensorflows_own_ops_give_the_same_counts(rng):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install tensorflow-cpu)")

    def tf_distances(u, v):  # ADM's _batch_pairwise_distances on half casts, in TensorFlow
        u, v = tf.cast(tf.constant(u), tf.float16), tf.cast(tf.constant(v), tf.float16)
        norm_u = tf.reshape(tf.reduce_sum(tf.square(u), 1), [-1, 1])
        norm_v = tf.reshape(tf.reduce_sum(tf.square(v), 1), [1, -1])
        return tf.cast(tf.maximum(norm_u - 2 * tf.matmul(u, v, False, True) + norm_v, 0.0), tf.float32).numpy()

    for offset in (0.3, 0.35):
        ref, sample = relu_pool(rng, 400, 0.3), relu_pool(rng, 400, offset)
        square = tf.reduce_sum(tf.square(tf.cast(tf.constant(ref), tf.float16)), 1).numpy()
        np.testing.assert_array_equal(manifold.half_norms(manifold._half(ref)), square)
        theirs = reference_precision_recall(ref, sample, tf_distances)
        assert manifold.precision_recall(ref, sample) == theirs  # count for count
    assert theirs != reference_precision_recall(ref, sample, manifold.float32_distances)


@pytest.mark.parametrize("ref,sample,message", [
    (np.zeros((3, 8)), np.zeros((5, 8)), "the reference batch has 3 images; precision and recall need at least 4"),
    (np.zeros((5, 8)), np.zeros((5, 9)), "the reference batch has 8 features per image, the sample batch 9"),
    (np.full((5, 8), np.nan), np.zeros((5, 8)), "the reference batch's features must be finite"),
])
def test_bad_features_are_refused(ref, sample, message):
    with pytest.raises(ValueError, match=message):
        manifold.precision_recall(ref, sample)


# --- the five numbers ------------------------------------------------------------------------------
from fastfid.adm import evaluate  # noqa: E402
from fastfid import cli  # noqa: E402


@pytest.fixture(scope="module")
def batch_files(tmp_path_factory):
    rng = np.random.default_rng(32)
    folder = tmp_path_factory.mktemp("adm")
    ref, sample = uint8_images(rng, 10, size=32), (uint8_images(rng, 9, size=32) // 2 + 40).astype(np.uint8)
    np.savez(folder / "ref.npz", arr_0=ref)
    np.savez_compressed(folder / "sample.npz", arr_0=sample)
    return folder / "ref.npz", folder / "sample.npz"


@pytest.mark.slow
def test_evaluate_is_the_pieces_together_and_the_reference_is_cached(batch_files, peer_weights, tmp_path,
                                                                     monkeypatch):
    import fastfid
    from fastfid.adm import network as adm_network

    monkeypatch.setenv("FASTFID_HOME", str(tmp_path))
    ref_path, sample_path = batch_files
    result = evaluate(ref_path, sample_path, weights=peer_weights, device="cpu", batch_size=4)
    # The same batches as evaluate's: float32 convolutions may round differently in another batch size.
    ref, sample = (activations(p, weights=peer_weights, device="cpu", batch_size=4) for p in batch_files)
    moments = [(a.mean(0, dtype=np.float64), np.cov(a.astype(np.float64), rowvar=False)) for a in (sample.pool, ref.pool)]
    spatial = [(a.mean(0, dtype=np.float64), np.cov(a.astype(np.float64), rowvar=False))
               for a in (sample.spatial, ref.spatial)]
    # float64 moments of float32 activations in two orders; the exact distance: 1e-9 relative.
    assert result.fid == pytest.approx(fastfid.frechet_distance(*moments[0], *moments[1]), rel=1e-9)
    assert result.sfid == pytest.approx(fastfid.frechet_distance(*spatial[0], *spatial[1]), rel=1e-9)
    assert result.inception_score == inception_score(sample.logits)
    assert (result.precision, result.recall) == manifold.precision_recall(ref.pool, sample.pool)
    assert result.reference_statistics == "computed"
    # Again: the reference's 10 images are not run through the network a second time.
    calls = []
    real_call = adm_network.ADMInception.__call__
    monkeypatch.setattr(adm_network.ADMInception, "__call__", lambda self, x: calls.append(len(x)) or real_call(self, x))
    again = evaluate(ref_path, sample_path, weights=peer_weights, device="cpu", batch_size=4)
    assert again == result and sum(calls) == 9  # the sample's 9 only


@pytest.mark.slow
def test_the_command_prints_adms_lines_and_uses_stored_statistics(batch_files, peer_weights, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setenv("FASTFID_HOME", str(tmp_path))
    ref_path, sample_path = batch_files
    rng = np.random.default_rng(5)
    stored = tmp_path / "with_stats.npz"
    mu, mu_s = rng.random(2048), rng.random(2023)
    np.savez(stored, arr_0=np.load(ref_path)["arr_0"], mu=mu, sigma=np.eye(2048), mu_s=mu_s, sigma_s=np.eye(2023))
    assert cli.main(["adm", str(stored), str(sample_path), "--weights", str(peer_weights), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Inception Score", "FID", "sFID", "Precision", "Recall"]
    assert cli.main(["adm", str(stored), str(sample_path), "--weights", str(peer_weights), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference_statistics"] == "stored"
    assert f"FID: {report['fid']}" == lines[1]
    sample = activations(sample_path, weights=peer_weights, device="cpu")
    expected = fastfid_distance(sample.pool, mu, np.eye(2048))
    assert report["fid"] == pytest.approx(expected, rel=1e-9)


def fastfid_distance(features, mu, sigma):
    import fastfid

    return fastfid.frechet_distance(features.mean(0, dtype=np.float64), np.cov(features.astype(np.float64), rowvar=False), mu, sigma)


def test_too_few_images_or_half_stored_statistics_are_named_before_the_network_runs(tmp_path, rng):
    small = tmp_path / "small.npz"
    np.savez(small, arr_0=uint8_images(rng, 3, size=8))
    good = tmp_path / "good.npz"
    np.savez(good, arr_0=uint8_images(rng, 5, size=8))
    with pytest.raises(ValueError, match=r"small.npz has 3 images; ADM's precision and recall need at least 4"):
        evaluate(good, small, weights=False)
    half = tmp_path / "half.npz"
    np.savez(half, arr_0=uint8_images(rng, 5, size=8), mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ValueError, match="half.npz has mu, sigma but not mu_s, sigma_s"):
        evaluate(half, good, weights=False)
