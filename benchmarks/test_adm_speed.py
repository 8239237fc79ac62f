"""ADM's precision and recall on pool3 features: fastfid's float16 estimator (blocks of 10,000,
tiles of 1,024 rows, O(tile) memory) beside a float32 numpy implementation of ADM's
ManifoldEstimator as its evaluator runs it (10,000-row distance batches, np.partition per row
block), the float32 ports' way, at the same sizes. FASTFID_BENCH_ADM_IMAGES sets the images per
side (default 10,000; CI runs 300)."""

import os

import numpy as np
import pytest

from fastfid.adm import manifold

IMAGES = int(os.environ.get("FASTFID_BENCH_ADM_IMAGES", "10000"))
GROUP = f"adm-precision-recall-{IMAGES}x{IMAGES}"


def pool_features(rng, n, offset):
    z = rng.standard_normal((n, 2048)).astype(np.float32) * np.exp(-np.arange(2048) / 256).astype(np.float32)
    return np.maximum(z + offset, 0).astype(np.float32)


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(32)
    return pool_features(rng, IMAGES, 0.3), pool_features(rng, IMAGES, 0.33)


def tensorflow_distances():
    """ADM's _batch_pairwise_distances on half casts, in TensorFlow (None without TensorFlow)."""
    try:
        import tensorflow as tf
    except ImportError:
        return None

    def distances(u, v):
        u, v = tf.cast(tf.constant(u), tf.float16), tf.cast(tf.constant(v), tf.float16)
        norm_u = tf.reshape(tf.reduce_sum(tf.square(u), 1), [-1, 1])
        norm_v = tf.reshape(tf.reduce_sum(tf.square(v), 1), [1, -1])
        return tf.cast(tf.maximum(norm_u - 2 * tf.matmul(u, v, False, True) + norm_v, 0.0), tf.float32).numpy()

    return distances


def numpy_float32_distances(u, v):
    return np.maximum((u * u).sum(1)[:, None] - 2 * (u @ v.T) + (v * v).sum(1)[None, :], np.float32(0))


def adm_estimator(ref, sample, block=10_000, distances=numpy_float32_distances):
    """ADM's ManifoldEstimator in numpy (float32 distances unless given): radii from each row block's distances
    to all points (np.partition at index 3), then coverage block by block."""
    def radii(x):
        out = np.empty(len(x), dtype=np.float32)
        for start in range(0, len(x), block):
            rows = np.concatenate([distances(x[start:start + block], x[c:c + block]) for c in range(0, len(x), block)],
                                  axis=1)
            out[start:start + block] = np.partition(rows, 3, axis=1)[:, 3]
        return out

    ref_radii, sample_radii = radii(ref), radii(sample)
    ref_in, sample_in = np.zeros(len(ref), bool), np.zeros(len(sample), bool)
    for r in range(0, len(ref), block):
        for c in range(0, len(sample), block):
            d = distances(ref[r:r + block], sample[c:c + block])
            ref_in[r:r + block] |= (d <= sample_radii[None, c:c + block]).any(1)
            sample_in[c:c + block] |= (d <= ref_radii[r:r + block, None]).any(0)
    return float(sample_in.mean()), float(ref_in.mean())


@pytest.mark.benchmark(group=GROUP)
def test_fastfid_float16_precision_recall(benchmark, features):
    ref, sample = features
    precision, recall = benchmark.pedantic(manifold.precision_recall, args=(ref, sample), rounds=1, iterations=1)
    # The float16 roundings move the counts a little, never far (float32 ports are 0.1-0.25 points off
    # at 50,000 images; a few points of 300 in CI's run).
    float32 = adm_estimator(ref, sample)
    assert abs(precision - float32[0]) <= 0.03 and abs(recall - float32[1]) <= 0.03
    if IMAGES <= 2000:  # ADM's estimator all at once on fastfid's float16 distances: the same counts
        def distances(a, b):
            a16, b16 = a.astype(np.float16), b.astype(np.float16)
            return manifold.half_distances(a16, manifold.half_norms(a16), b16, manifold.half_norms(b16))

        ref_radii = np.sort(distances(ref, ref), axis=1)[:, 3]
        sample_radii = np.sort(distances(sample, sample), axis=1)[:, 3]
        between = distances(ref, sample)
        assert precision == float((between <= ref_radii[:, None]).any(axis=0).mean())
        assert recall == float((between <= sample_radii[None, :]).any(axis=1).mean())


@pytest.mark.benchmark(group=GROUP)
def test_float32_numpy_manifold_estimator(benchmark, features):
    ref, sample = features
    precision, recall = benchmark.pedantic(adm_estimator, args=(ref, sample), rounds=1, iterations=1)
    assert 0 <= precision <= 1 and 0 <= recall <= 1


@pytest.mark.benchmark(group=GROUP)
def test_adms_estimator_with_tensorflows_half_ops(benchmark, features):
    """ADM's own way on a machine without a GPU: its distance graph in TensorFlow's half ops (cast,
    square, sum, matmul, maximum), 10,000-row batches against all points, np.partition per row batch."""
    distances = tensorflow_distances()
    if distances is None:
        pytest.skip("TensorFlow is not installed (pip install tensorflow-cpu)")
    ref, sample = features
    precision, recall = benchmark.pedantic(adm_estimator, args=(ref, sample), kwargs={"distances": distances},
                                           rounds=1, iterations=1)
    ours = manifold.precision_recall(ref, sample)
    assert (precision, recall) == ours  # count for count (tests/test_adm.py shows why)

