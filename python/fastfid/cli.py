"""The ``fastfid`` command line: thin over the Python API.

    fastfid fid A.npz B.npz [--method eigh] [--json]
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
