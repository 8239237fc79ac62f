"""ADM's precision and recall at its usual sizes, 50,000 samples against 10,000 references (pool3-like
features): fastfid's float16 estimator beside a float32 numpy ManifoldEstimator and, where
TensorFlow is installed, ADM's own way without a GPU (its distance graph in TensorFlow's half ops,
np.partition per row batch), one run each, in one process. Minutes on a 2-core CPU.

    python benchmarks/adm_speed_50k.py [--samples 50000] [--references 10000]
"""

import argparse
import time

import numpy as np

from fastfid.adm import manifold
from test_adm_speed import adm_estimator, pool_features, tensorflow_distances


def timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--references", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(50)
    ref, sample = pool_features(rng, args.references, 0.3), pool_features(rng, args.samples, 0.33)
    rows = [("fastfid (float16)", *timed(lambda: manifold.precision_recall(ref, sample)))]
    rows.append(("float32 numpy ManifoldEstimator", *timed(lambda: adm_estimator(ref, sample))))
    tf_distances = tensorflow_distances()
    if tf_distances is not None:
        rows.append(("ADM: TensorFlow half ops, np.partition",
                     *timed(lambda: adm_estimator(ref, sample, distances=tf_distances))))
    print(f"| {args.samples:,} samples × {args.references:,} references | precision | recall | time |")
    print("|---|---|---|---|")
    for name, (precision, recall), seconds in rows:
        print(f"| {name} | {precision:.4f} | {recall:.4f} | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
