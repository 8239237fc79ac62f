"""The ``fastfid`` command line: thin over the Python API.

    fastfid fid A.npz B.npz [--method eigh] [--json]
    fastfid fid GENERATED.npy REFERENCE.npz --error-bars [--groups 20] [--plot jackknife.png]
    fastfid compare results.csv [--models A B] [--threshold 0.013] [--plot panel.png] [--json]
    fastfid stats FEATURES.npy -o out.npz [--batch-size 4096]
    fastfid merge a.npz b.npz ... -o total.npz
    fastfid fdr --space NAME GENERATED.npz REFERENCE.npz VALIDATION(.npz or valFD) ... [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fastfid.distance import METHODS, fid
from fastfid.stats import FeatureStats


def _fid(args) -> int:
    if args.error_bars:
        return _fid_with_error(args)
    result = fid(args.path1, args.path2, method=args.method, return_info=True)
    if args.json:
        print(json.dumps({
            "fid": result.value, "trace_sqrt": result.trace_sqrt, "mean_term": result.mean_term,
            "method": result.method, "rank": result.rank, "iterations": result.iterations,
            "clamped": result.clamped, "most_negative": result.most_negative, "converged": result.converged,
        }))
    else:
        print(f"FID: {result.value:.6f}")
    return 0


def _fid_with_error(args) -> int:
    from fastfid.uncertainty import fid_with_error, split_into_shards

    # Shards need the features themselves: contiguous slices of the memory-mapped file, each read
    # once (generated samples are exchangeable, so contiguous groups are as good as random ones).
    generated = _open_features(Path(args.path1))
    reference = FeatureStats.from_features(_open_features(Path(args.path2))) if args.path2.endswith(".npy") \
        else args.path2
    result = fid_with_error(split_into_shards(generated, args.groups, seed=None), reference)
    if args.plot:
        from fastfid.plots import plot_jackknife

        plot_jackknife(result, args.plot)
    if args.json:
        print(json.dumps({"fid": result.value, "standard_error": result.standard_error, "interval": result.interval,
                          "confidence": result.confidence, "bias_corrected": result.bias_corrected,
                          "groups": result.groups, "method": result.method}))
    else:
        low, high = result.interval
        print(f"FID: {result.value:.6f} ± {result.standard_error:.6f} ({100 * result.confidence:g}% interval "
              f"[{low:.6f}, {high:.6f}], bias-corrected {result.bias_corrected:.6f}, {result.groups} groups)")
    return 0


def _compare(args) -> int:
    from fastfid.uncertainty import compare, read_panels, seed_study

    panels = read_panels(args.results)
    names = args.models or sorted(panels)
    missing = [name for name in names if name not in panels]
    if missing:
        raise ValueError(f"{args.results} has no model {missing[0]!r}; it has {sorted(panels)}")
    studies = {name: seed_study(panels[name]) for name in names}
    verdict = None
    if len(names) == 2:
        verdict = compare(studies[names[0]], studies[names[1]], threshold=args.threshold)
    elif args.models is None and len(names) > 2:
        print(f"fastfid: {len(names)} models: name two with --models for a verdict", file=sys.stderr)
    if args.plot:
        from fastfid.plots import plot_seed_study

        for name in names:
            target = Path(args.plot)
            plot_seed_study(studies[name], target.with_name(f"{target.stem}_{name}{target.suffix}") if len(names) > 1
                            else target)
    if args.json:
        print(json.dumps({
            "models": {name: {"mean": s.mean, "sigma_between": s.sigma_between, "sigma_within": s.sigma_within,
                              "cov_between": s.cov_between, "cov_within": s.cov_within, "icc": s.icc,
                              "interval": s.interval, "training_seeds": s.training_seeds,
                              "sampling_seeds": s.sampling_seeds} for name, s in studies.items()},
            "verdict": None if verdict is None else {"verdict": verdict.verdict, "gap": verdict.gap,
                                                     "interval": verdict.interval, "reason": verdict.reason}}))
    else:
        for name, s in studies.items():
            print(f"{name}: FID {s.mean:.4f} [{s.interval[0]:.4f}, {s.interval[1]:.4f}] over {s.training_seeds}×"
                  f"{s.sampling_seeds} seeds; sigma between {s.sigma_between:.4f} ({100 * s.cov_between:.2f}%), "
                  f"within {s.sigma_within:.4f} ({100 * s.cov_within:.2f}%)")
        if verdict is not None:
            print(f"A = {names[0]}, B = {names[1]}: {verdict}")
    return 0


def _stats(args) -> int:
    features = _open_features(Path(args.features))
    if features.ndim != 2:
        raise ValueError(f"{args.features} holds an array of shape {features.shape}; expected (samples, dim)")
    stats = FeatureStats(features.shape[1])
    # Memory-mapped and read in batches: the feature file never has to fit in memory at once.
    for start in range(0, features.shape[0], args.batch_size):
        stats.update(features[start:start + args.batch_size])
    stats.save(args.output)
    print(f"{stats.count} samples of dim {stats.dim} -> {args.output}", file=sys.stderr)
    return 0


def _open_features(path: Path) -> np.ndarray:
    if path.suffix != ".npy":
        raise ValueError(f"{path}: expected a .npy file of features (samples, dim)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:  # numpy's word for a malformed header
        raise OSError(f"{path} is not a readable .npy file: {error}") from error


def _merge(args) -> int:
    total = FeatureStats.load(args.inputs[0])
    for path in args.inputs[1:]:
        total.merge(FeatureStats.load(path))
    total.save(args.output)
    print(f"{total.count} samples from {len(args.inputs)} files -> {args.output}", file=sys.stderr)
    return 0


def _fdr(args) -> int:
    from fastfid.representations import fdr

    spaces = {}
    for name, generated, reference, validation in args.space:
        if name in spaces:
            raise ValueError(f"space {name!r} is given twice")
        spaces[name] = (generated, reference, _number_or_path(validation))
    result = fdr(spaces)
    if args.json:
        print(json.dumps({"fdr": result.value, "k": result.k, "spaces": {
            name: {"fd": r.fd, "validation_fd": r.validation_fd, "fdr": r.ratio} for name, r in result.spaces.items()}}))
    else:
        for name, r in result.spaces.items():
            print(f"{name}: FD {r.fd:.6f} / valFD {r.validation_fd:.6f} = FDr {r.ratio:.6f}")
        print(f"FDr^{result.k}: {result.value:.6f}")
    return 0


def _number_or_path(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastfid", description="Fast, exact Fréchet distances (FID).")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("fid", help="FID between two statistics files (.npz: fastfid, pytorch-fid, clean-fid)")
    p.add_argument("path1")
    p.add_argument("path2")
    p.add_argument("--method", choices=METHODS, default="auto")
    p.add_argument("--json", action="store_true", help="print the result and its diagnostics as JSON")
    p.add_argument("--error-bars", action="store_true",
                   help="jackknife standard error and interval; PATH1 must be generated features (.npy)")
    p.add_argument("--groups", type=int, default=20, help="shards for --error-bars (default 20)")
    p.add_argument("--plot", help="with --error-bars: write the jackknife distribution to this PNG")
    p.set_defaults(run=_fid)

    p = commands.add_parser("stats", help="statistics of a .npy feature matrix (samples, dim)")
    p.add_argument("features")
    p.add_argument("-o", "--output", required=True, help="the .npz to write")
    p.add_argument("--batch-size", type=int, default=4096, help="rows read per pass (default 4096)")
    p.set_defaults(run=_stats)

    p = commands.add_parser("merge", help="merge statistics files exactly into one")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", required=True, help="the .npz to write")
    p.set_defaults(run=_merge)

    p = commands.add_parser("compare", help="seed panels and a verdict from a CSV/JSON of model, train_seed, "
                                            "sample_seed, fid")
    p.add_argument("results")
    p.add_argument("--models", nargs=2, metavar=("A", "B"), help="the two models to compare (default: the only two)")
    p.add_argument("--threshold", type=float, default=0.013, help="relative gap below which it is a lottery")
    p.add_argument("--plot", help="write each model's seed panel to this PNG (suffixed by model when several)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_compare)

    p = commands.add_parser("fdr", help="FDr per representation space (FD / valFD) and FDr^k, their mean")
    p.add_argument("--space", nargs=4, action="append", required=True,
                   metavar=("NAME", "GENERATED", "REFERENCE", "VALIDATION"),
                   help="statistics files of one space; VALIDATION is held-out real statistics or a valFD number")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_fdr)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        print("fastfid: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, ImportError) as error:
        print(f"fastfid: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
