"""The ``fastfid`` command line: thin over the Python API.

    fastfid fid PATH1 PATH2 [--dims 2048] [--batch-size 50] [--device cuda] [--num-workers 8]
                            [--resize MODE] [--isc] [--skip-bad] [--save-stats] [--ddof 0|1] [--json]
        PATH: a folder or zip of images, a .npy of features (2-D) or images (4-D), a .npz of statistics,
        EDM2's reference .pkl; --weights inception-2015-12-05.pt runs NVIDIA's TorchScript detector
    torchrun --nproc_per_node=K -m fastfid fid PATH1 PATH2 ...   (each rank takes a share, exact merge)
    fastfid fid GENERATED.npy REFERENCE.npz --error-bars [--groups 20] [--plot jackknife.png]
    fastfid stats PATH -o out.npz [--shard i/k] [--resume | --overwrite] [--fingerprint stat|content]
    fastfid merge a.npz b.npz ... -o total.npz [--allow-partial]
    fastfid compare results.csv [--models A B] [--threshold 0.013] [--plot panel.png] [--json]
    fastfid stats PATH -o reference.npz --spaces inception,dinov2-vit-l14 [--valfd NAME=VALUE ...]
    fastfid fdr GENERATED REFERENCE --spaces inception,dinov2-vit-l14,clip-vit-l-14 [--valfd NAME=VALUE] [--json]
        GENERATED/REFERENCE: image folders or zips, or statistics of those spaces (one file, several spaces)
    fastfid fdr --space NAME GENERATED.npz REFERENCE.npz VALIDATION(.npz or valFD) ... [--json]
    --space NAME (fid, stats): a representation space instead of the Inception --dims
    fastfid serve [--store DIR] [--database URL] [--host 127.0.0.1] [--port 8000] [--workers 1] [--canary-every 1h]
    fastfid token create NAME --scope read|evaluate|admin | revoke NAME | list  [--store DIR] [--database URL]
    fastfid submit FILE... --url URL --model M --checkpoint C --reference R [--train-seed S] [--json]
    --log mlflow|wandb|tensorboard (fid, submit): also record the result in that tracker
    fastfid adm REF_BATCH.npz SAMPLE_BATCH.npz [--json]   (ADM's evaluator: IS, FID, sFID, precision, recall)
    fastfid cmmd GENERATED REFERENCE [--save-reference ref.npz] [--resize cmmd|cmmd-pytorch] [--json]
        (CMMD: images, or their CLIP ViT-L/14-336 embeddings (.npy (n, d), a saved .npz))
    fastfid references [--json] | fastfid references fetch NAME...   (named references: a name is taken
        wherever a statistics file is, e.g. fastfid fid generated/ clean-fid/cifar10/train/32/clean)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from fastfid._version import __version__
from fastfid._text import counted, size_text
from fastfid.distance import METHODS
from fastfid.files.arrays import open_features
from fastfid.files.atomic import check_writable, writing
from fastfid.files.spaces import holds_spaces
from fastfid.files.stats import read_progress
from fastfid.resize_modes import RESIZE_MODES
from fastfid.stats import FeatureStats


def _extraction_options(args) -> dict:
    """The options of fastfid.compute_stats / compute_fid that the image subcommands share."""
    from fastfid.distributed import launched_by_torchrun, setup_from_environment

    distributed = launched_by_torchrun()
    device = setup_from_environment(args.device) if distributed else args.device
    model = _spaces(args) or args.space or args.dims
    return dict(model=model, weights=_weights(args, model), batch_size=args.batch_size, device=device,
                num_workers=args.num_workers, resize=args.resize, skip_bad=args.skip_bad,
                progress=not args.quiet, distributed=distributed)


def _spaces(args) -> list[str] | None:
    """--spaces a,b,c as a list (None when not given)."""
    text = getattr(args, "spaces", None)
    if not text:
        return None
    if args.space is not None or args.dims != 2048:
        raise ValueError("--spaces names every network: give --space and --dims without it")
    return [name.strip() for name in text.split(",") if name.strip()]


def _weights(args, model):
    """--weights PATH (the one network) or NAME=PATH (repeatable, for --spaces)."""
    given = args.weights or []
    if not isinstance(model, list):
        if len(given) > 1:
            raise ValueError("--weights is given more than once for one network")
        if given and "=" in given[0] and given[0].split("=", 1)[0] == model:
            return given[0].split("=", 1)[1]
        return given[0] if given else None
    weights = {}
    for item in given:
        name, separator, path = item.partition("=")
        if not separator:
            raise ValueError(f"--weights {item}: with --spaces, say which network: --weights NAME=PATH")
        weights[name] = path
    return weights


def _valfds(items) -> dict[str, float]:
    """--valfd NAME=VALUE (repeatable) as name → valFD."""
    out = {}
    for item in items or ():
        name, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not name or not math.isfinite(number) or number <= 0:
            raise ValueError(f"--valfd {item}: expected NAME=VALUE with a positive valFD")
        out[name] = number
    return out


def _is_lead_rank() -> bool:
    """Rank 0 of a torchrun job (which prints and writes), or the only process."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    return dist is None or not dist.is_initialized() or dist.get_rank() == 0


def _fid(args) -> int:
    from fastfid.extraction import compute_fid, compute_stats

    if args.ddof != 1 and (args.error_bars or args.save_stats):
        raise ValueError("--ddof applies to the FID: --error-bars and --save-stats keep the exact statistics")
    if args.error_bars:
        return _fid_with_error(args)
    if args.save_stats:  # checked before the first image is read, not after the last
        check_writable(args.path2, inputs=[args.path1])
    else:
        _accept_partial_if_asked(args, [args.path1, args.path2])
    options = _extraction_options(args)
    if args.save_stats:  # pytorch-fid's meaning: statistics of PATH1 written to PATH2
        with writing(args.path2) if _is_lead_rank() else contextlib.nullcontext():  # one writer per output
            stats = compute_stats(args.path1, **options)
            if _is_lead_rank():
                stats.save(args.path2)
        if _is_lead_rank():
            print(f"{stats.count} samples ({_widths(stats)}) -> {args.path2}", file=sys.stderr)
        return 0
    result = compute_fid(args.path1, args.path2, method=args.method, isc=args.isc, splits=args.splits,
                         ddof=args.ddof, **options)
    if not _is_lead_rank():
        return 0
    score = result.inception_score
    if score is not None and score.count < FEW_PER_SPLIT * score.splits:
        print(f"fastfid: warning: the Inception Score of {score.count} images in {score.splits} splits "
              f"({score.count // score.splits} per split) is not comparable with published ones, which take "
              "5,000 per split (50,000 in 10); with one image per split it is 1.0 whatever the images",
              file=sys.stderr)
    _log_to_trackers(args, result)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(result)
    return 0


FEW_PER_SPLIT = 50
"""Below this many images per split, `--isc` warns: the score is biased low (exactly 1 at one per split)."""


def _fid_with_error(args) -> int:
    from fastfid.uncertainty import fid_with_error, split_into_shards

    # Shards need the features themselves: contiguous slices of the memory-mapped file, each read
    # once (generated samples are exchangeable, so contiguous groups are as good as random ones).
    progress = not args.quiet
    generated = open_features(args.path1)
    reference = FeatureStats.from_features(open_features(args.path2)) if args.path2.endswith(".npy") \
        else FeatureStats.load(args.path2, allow_partial=args.allow_partial)
    result = fid_with_error(split_into_shards(generated, args.groups, seed=None, progress=progress), reference,
                            progress=progress)
    _log_to_trackers(args, result, reference_sha256=reference.state_sha256())
    if args.plot:
        from fastfid.plots import plot_jackknife

        plot_jackknife(result, args.plot)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        low, high = result.interval
        # The interval belongs to the bias-corrected value; the plain FID, biased up by the finite
        # sample, may lie outside it, so each number is printed beside its own label.
        print(f"bias-corrected FID: {result.bias_corrected:.6f}  {100 * result.confidence:g}% interval "
              f"[{low:.6f}, {high:.6f}]  (jackknife over {result.groups} groups, standard error "
              f"{result.standard_error:.6f})")
        print(f"plain FID:          {result.value:.6f}  (all samples, not bias-corrected)")
    return 0


def _log_to_trackers(args, result, **details) -> None:
    """--log: the result in each named tracker (a run opened and closed around it)."""
    import fastfid.tracking as tracking

    for tracker in args.log or ():
        run, close = tracking.open_run(tracker)
        try:
            tracking.log(result, run, **details)
        finally:
            close()
        print(f"fastfid: logged to {tracker}", file=sys.stderr)


def _serve(args) -> int:
    from fastfid.service.canaries import check_webhook
    from fastfid.service.config import from_arguments
    from fastfid.service.server import serve

    config = from_arguments(args)
    if config.webhook:
        check_webhook(config.webhook)  # refused before the server starts, in one line
    serve(config, host=args.host, port=args.port, workers=args.workers)
    return 0


def _token(args) -> int:
    from fastfid.service.config import default_store
    from fastfid.service.store import Store, new_token

    store = Store(args.store or default_store(), args.database_url)
    try:
        if args.action == "create":
            if not args.name or not args.scope:
                raise ValueError("token create needs a NAME and --scope read|evaluate|admin")
            token = new_token()
            store.add_token(args.name, args.scope, token)
            print(token)  # shown once: the store keeps only its SHA-256
            print(f"fastfid: {args.scope} token {args.name!r} created; it is not stored and cannot be shown again",
                  file=sys.stderr)
        elif args.action == "revoke":
            if not args.name:
                raise ValueError("token revoke needs the NAME whose tokens to remove")
            removed = store.revoke_tokens(args.name)
            if not removed:
                raise ValueError(f"no token named {args.name!r}")
            print(f"fastfid: {removed} token(s) of {args.name!r} revoked (refused from the next request on)",
                  file=sys.stderr)
        else:
            for record in store.token_names():
                print(f"{record['name']}\t{record['scope']}")
    finally:
        store.close()
    return 0


def _submit(args) -> int:
    from fastfid.client import Service

    paths = [Path(p) for p in args.files]
    suffixes = {p.suffix for p in paths}
    inputs: dict[str, Any]
    if suffixes == {".npy"} and len(paths) == 1:
        inputs = {"features": paths[0]}
    elif suffixes == {".npz"}:
        inputs = {"stats": paths[0]} if len(paths) == 1 else {"shards": paths}
    else:
        raise ValueError("submit one .npy of features, or one or more .npz statistics files (several are shards)")
    service = Service(args.url, args.token, retries=args.retries,
                      on_retry=lambda message: print(f"fastfid: {message}", file=sys.stderr, flush=True))
    result = service.evaluate(model=args.model, checkpoint=args.checkpoint, reference=args.reference,
                              train_seed=args.train_seed, sample_seed=args.sample_seed, baseline=args.baseline,
                              feature_space=args.feature_space, validation_fd=_valfds(args.valfd) or None, **inputs)
    if args.json:
        print(json.dumps(result))
    elif "spaces" in result:  # a file of several spaces: one evaluation per space
        for space, record in result["spaces"].items():
            _print_evaluation(args, record, f"{space}: ")
        if "fdr" in result:
            print(f"FDr^{result['fdr']['k']}: {result['fdr']['value']:.6f}")
    else:
        _print_evaluation(args, result)
    for record in result.get("spaces", {"": result}).values():
        _log_to_trackers(args, record)
    return 0


def _print_evaluation(args, result: dict, prefix: str = "") -> None:
    error = "" if result["standard_error"] is None else f"; jackknife SE {result['standard_error']:.6f}"
    print(f"{prefix}FID: {result['fid']:.6f}  [{args.model} @ {args.checkpoint} vs {result['reference']} "
          f"v{result['reference_version']}{error}; evaluation {result['id']}]")
    verdict = result.get("verdict")
    if verdict:
        against = verdict["against"]
        print(f"{prefix}against {against['model']} @ {against['checkpoint']}: {verdict['verdict'] or 'no verdict'} "
              f"— {verdict['reason']}")


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

        target, written = Path(args.plot), []
        for name in names:  # one panel per model: PANEL_NAME.png when there are several
            path = target.with_name(f"{target.stem}_{name}{target.suffix}") if len(names) > 1 else target
            plot_seed_study(studies[name], path)
            written.append(str(path))
        print(f"fastfid: seed panels -> {', '.join(written)}", file=sys.stderr)
    if args.json:
        print(json.dumps({"models": {name: study.as_dict() for name, study in studies.items()},
                          "verdict": None if verdict is None else verdict.as_dict()}))
    else:
        for name, s in studies.items():
            print(f"{name}: FID {s.mean:.4f} [{s.interval[0]:.4f}, {s.interval[1]:.4f}] over {s.training_seeds}×"
                  f"{s.sampling_seeds} seeds; sigma between {s.sigma_between:.4f} ({100 * s.cov_between:.2f}%), "
                  f"within {s.sigma_within:.4f} ({100 * s.cov_within:.2f}%)")
        if verdict is not None:  # the verdict speaks of A and B
            print(str(verdict) if names == ["A", "B"] else f"A = {names[0]}, B = {names[1]}: {verdict}")
    return 0


def _stats(args) -> int:
    from fastfid.extraction import compute_stats

    check_writable(args.output, inputs=[args.path])  # before the first image, not after the last
    options = _extraction_options(args)
    if options["distributed"] and (args.shard or args.resume):
        raise ValueError("--shard and --resume are for job arrays; under torchrun the ranks share the work")
    # The output is the checkpoint too, except where nothing is long: statistics in, or torchrun's
    # ranks (which cannot resume one file).
    checkpointed = not options["distributed"] and Path(args.path).suffix != ".npz"
    _refuse_to_replace(args, checkpointed)
    checkpoint = args.output if checkpointed else None
    valfd = _valfds(args.valfd)
    if valfd and not isinstance(options["model"], list):
        raise ValueError("--valfd is stored with statistics of named spaces: give --spaces")
    if isinstance(options["model"], list) and Path(args.path).suffix in (".npz", ".npy"):
        raise ValueError(f"--spaces computes statistics of images (a folder or zip), not of {args.path}")
    # One writer per output: the job locks its checkpoint; otherwise the lead rank locks it here.
    with contextlib.nullcontext() if checkpointed or not _is_lead_rank() else writing(args.output):
        stats: Any = compute_stats(args.path, shard=args.shard, checkpoint=checkpoint, resume=args.resume,
                                   overwrite=args.overwrite and checkpointed, checkpoint_every=args.checkpoint_every,
                                   fingerprint=args.fingerprint, **options)
        if valfd:
            unknown = sorted(set(valfd) - set(stats))
            if unknown:
                raise ValueError(f"--valfd for {', '.join(unknown)}, which is not among --spaces")
            stats.validation_fd.update(valfd)
        if _is_lead_rank() and (checkpoint is None or valfd):  # saved again with the valFDs
            with writing(args.output) if checkpointed else contextlib.nullcontext():
                stats.save(args.output)
    if _is_lead_rank():
        print(f"{stats.count} samples ({_widths(stats)}) -> {args.output}", file=sys.stderr)
    return 0


def _widths(stats) -> str:
    from fastfid.representations import SpaceStats

    if isinstance(stats, SpaceStats):
        return ", ".join(f"{name}: dim {s.dim}" for name, s in stats.items())
    return f"dim {stats.dim}"


def _refuse_to_replace(args, checkpointed: bool) -> None:
    """Finished statistics at --output are replaced only with --overwrite. A partial run's checkpoint
    is the job's to continue (--resume) or discard (--overwrite); without one, it is refused here."""
    if args.overwrite or args.resume or not Path(args.output).exists():
        return
    try:
        record = read_progress(args.output)
    except (OSError, ValueError):
        record = None  # not statistics fastfid can read: still not replaced unasked
    if record is not None and not record.get("complete", False):
        if checkpointed:
            return
        raise ValueError(f"{args.output} holds a partial run: --overwrite replaces it")
    raise ValueError(f"{args.output} already exists (finished statistics, or another file): --overwrite "
                     "replaces it")


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/k (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard {text}: need 0 <= i < k")
    return index, count


def _add_extraction_arguments(p: argparse.ArgumentParser, batch_help: str, space: bool = True) -> None:
    from fastfid.models.spaces import SPACE_RESIZE_MODES, space_names

    p.add_argument("--dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                   help="FID Inception-v3 layer (pytorch-fid's --dims; default 2048, pool3)")
    if space:
        p.add_argument("--space", choices=space_names(), metavar="NAME",
                       help=f"a representation space instead of Inception: {', '.join(space_names())}")
    p.add_argument("--batch-size", type=int, default=50, help=batch_help)
    p.add_argument("--device", help="torch device for the network and statistics (default: cuda if available, "
                                    "under torchrun cuda:LOCAL_RANK)")
    p.add_argument("--num-workers", type=int, help="image loading processes (default: cores, at most 8)")
    p.add_argument("--resize", choices=RESIZE_MODES + tuple(m for m in SPACE_RESIZE_MODES if m not in RESIZE_MODES),
                   help="preprocessing, named after the library it reproduces: for Inception pytorch-fid (default), "
                        "torch-fidelity, torchmetrics, clean, legacy_tensorflow; for the spaces dgm-eval (default; "
                        "also EDM2's 'pil'), torch-fidelity or edm2 (EDM2's 'torch') (see the README's tables)")
    p.add_argument("--weights", action="append", metavar="[NAME=]PATH",
                   help="weights file (default: Inception's from $FASTFID_WEIGHTS, the torch hub cache or a download; "
                        "a space's from its library's cache); with --spaces, NAME=PATH, repeatable")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out and count them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _accept_partial_if_asked(args, paths) -> None:
    """compute_fid refuses partial statistics files; with --allow-partial they are read here first,
    each that is partial taken as it is, with a warning."""
    if not args.allow_partial:
        return
    import warnings

    for index, path in enumerate(paths):
        if str(path).endswith(".npz"):
            record = read_progress(path)
            if record is not None and not record.get("complete", False):
                warnings.warn(f"{path} holds partial statistics; used as they are (--allow-partial)", RuntimeWarning,
                              stacklevel=2)
                paths[index] = FeatureStats.load(path, allow_partial=True)
    args.path1, args.path2 = paths


def _merge(args) -> int:
    from fastfid.representations import SpaceStats

    check_writable(args.output, inputs=args.inputs)
    seen: dict[str, str] = {}
    total: Any = None
    for path in args.inputs:
        stats: Any = SpaceStats.load(path, allow_partial=args.allow_partial) if holds_spaces(path) else \
            FeatureStats.load(path, allow_partial=args.allow_partial)
        if total is not None and isinstance(stats, SpaceStats) != isinstance(total, SpaceStats):
            raise ValueError(f"{path}: statistics of several spaces and of one cannot be merged")
        digest = "".join(s.state_sha256() for s in stats.values()) if isinstance(stats, SpaceStats) \
            else stats.state_sha256()
        if digest in seen:  # the same samples twice would count twice
            raise ValueError(f"{path} holds the same statistics as {seen[digest]}: merging both would count the same "
                             "samples twice")
        seen[digest] = str(path)
        total = stats if total is None else total.merge(stats)
    assert total is not None  # argparse requires at least one input
    total.save(args.output)
    print(f"{total.count} samples from {counted(len(args.inputs), 'file')} -> {args.output}", file=sys.stderr)
    return 0


def _fdr(args) -> int:
    from fastfid.representations import FDrResult, fdr

    result: FDrResult
    if args.paths:
        result = _fdr_of_images(args)
    else:
        result = fdr(_listed_spaces(args))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        for name, r in result.spaces.items():
            print(f"{name}: FD {r.fd:.6f} / valFD {r.validation_fd:.6f} = FDr {r.ratio:.6f}")
        print(f"FDr^{result.k}: {result.value:.6f}")
    return 0


def _fdr_of_images(args):
    """FDr^k of GENERATED against REFERENCE in --spaces: images through every network in one pass,
    statistics files of those spaces read as they are."""
    from fastfid.extraction import compute_stats
    from fastfid.extraction.networks import check_comparable, extractor_for
    from fastfid.references import resolve
    from fastfid.representations import SpaceStats

    if len(args.paths) != 2 or args.space:
        raise ValueError("fdr takes GENERATED REFERENCE with --spaces, or --space NAME GEN REF VAL (statistics)")
    names = _spaces(args)
    if not names:
        raise ValueError("fdr GENERATED REFERENCE needs --spaces NAME,NAME,...")
    options = _extraction_options(args)
    options["resize"] = _references_modes(args.paths, names, options["resize"])
    sides: dict[int, Any] = {}
    for index, path in enumerate(args.paths):  # the statistics files first: they are checked before any image
        path = str(resolve(path))  # a reference's name: its checked file
        if path.endswith(".npy"):
            raise ValueError(f"{path}: fdr reads images (a folder or zip) or statistics of the spaces (.npz)")
        if holds_spaces(path) or path.endswith(".npz"):
            stats = SpaceStats.load(path)
            missing = [name for name in names if name not in stats]
            if missing:
                raise ValueError(f"{path} holds no statistics of {', '.join(missing)}; it has {', '.join(stats)}")
            sides[index] = SpaceStats({name: stats[name] for name in names}, stats.validation_fd)
    if len(sides) < len(args.paths):
        extractor = extractor_for(names, options["weights"], options["device"], options["resize"], "auto",
                                  progress=options["progress"])
        for index, stats in sides.items():
            check_comparable(extractor, stats, f"the statistics in {args.paths[index]}")
        for index, path in enumerate(args.paths):
            if index not in sides:
                sides[index] = compute_stats(path, **{**options, "model": extractor})
    return sides[0].fdr(sides[1], _valfds(args.valfd))


def _references_modes(paths, names: list[str], resize: str | None):
    """With a named reference among ``paths``: each space's preprocessing as its publisher's (a --resize
    that gives another is refused); else ``resize`` as it is."""
    from fastfid.extraction.networks import mode_for
    from fastfid.references import named

    reference = next((r for r in map(named, paths) if r is not None), None)
    if reference is None:
        return resize
    modes = {}
    for name in names:
        if name not in reference.spaces:
            raise ValueError(f"{reference.name} holds statistics of {', '.join(reference.spaces)}, not of {name}")
        wanted, asked = reference.resize_for(name), mode_for(name, resize)
        if asked is not None and asked != wanted:
            raise ValueError(f"{reference.name}'s {name} statistics are of images preprocessed by {wanted!r}, not "
                             f"{asked!r}: leave --resize out")
        modes[name] = wanted
    return modes


def _listed_spaces(args) -> dict:
    if not args.space:
        raise ValueError("fdr needs GENERATED REFERENCE --spaces ..., or --space NAME GEN REF VAL")
    spaces = {}
    for name, generated, reference, validation in args.space:
        if name in spaces:
            raise ValueError(f"space {name!r} is given twice")
        spaces[name] = (generated, reference, _number_or_path(validation))
    return spaces


def _number_or_path(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastfid", description="Fast, exact Fréchet distances (FID).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("fid", help="FID between two image folders, zips, feature (.npy) or statistics "
                                        "(.npz; EDM2's .pkl) files")
    p.add_argument("path1", help="generated images (or their features / statistics)")
    p.add_argument("path2", help="reference images (or their features / statistics); with --save-stats, the .npz "
                                 "to write")
    _add_extraction_arguments(p, "images per batch (default 50)")
    p.add_argument("--save-stats", action="store_true", help="pytorch-fid's: write the statistics of PATH1 to PATH2")
    p.add_argument("--isc", action="store_true", help="also the Inception Score of PATH1, from the same pass")
    p.add_argument("--splits", type=int, default=10, help="splits for --isc (default 10)")
    p.add_argument("--method", choices=METHODS, default="auto")
    p.add_argument("--ddof", type=int, choices=(0, 1), default=1,
                   help="the covariance's divisor n - ddof: 1 (default: pytorch-fid, ADM, EDM, EDM2) or 0 "
                        "(StyleGAN2-ADA and StyleGAN3's metrics); statistics files without a count (mu, sigma) keep "
                        "theirs")
    p.add_argument("--json", action="store_true", help="print the result and its diagnostics as JSON")
    p.add_argument("--error-bars", action="store_true",
                   help="jackknife standard error and interval; PATH1 must be generated features (.npy)")
    p.add_argument("--groups", type=int, default=20, help="shards for --error-bars (default 20)")
    p.add_argument("--plot", help="with --error-bars: write the jackknife distribution to this PNG")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept a statistics file of an unfinished (interrupted) job as it is")
    _add_log_argument(p)
    p.set_defaults(run=_fid)

    p = commands.add_parser("stats", help="statistics of images (folder, zip, .npy) or of a .npy feature matrix")
    p.add_argument("path")
    p.add_argument("-o", "--output", required=True, help="the .npz to write (also the checkpoint of a long run)")
    _add_extraction_arguments(p, "images per batch (default 50; feature files are read 4096 rows at a time)")
    _add_spaces_arguments(p)
    p.add_argument("--shard", type=_shard, help="i/k: only the i-th of k contiguous parts (0-based), for job arrays")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the interrupted run saved in --output")
    again.add_argument("--overwrite", action="store_true",
                       help="replace what --output holds: finished statistics, or a partial run to start afresh")
    p.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                   help="save progress to --output this often (default 60 s; also on SIGINT/SIGTERM)")
    p.add_argument("--fingerprint", choices=("stat", "content"), default="stat",
                   help="how --resume checks that the inputs did not change: file names, sizes and times (default) "
                        "or their SHA-256 (reads every file once more)")
    p.set_defaults(run=_stats)

    p = commands.add_parser("merge", help="merge statistics files exactly into one")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", required=True, help="the .npz to write")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept statistics files of unfinished (interrupted) jobs as they are")
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
    p.add_argument("paths", nargs="*", metavar="GENERATED REFERENCE",
                   help="images (folder, zip) or statistics of --spaces (a file of several spaces)")
    _add_extraction_arguments(p, "images per batch (default 50)", space=False)
    _add_spaces_arguments(p)
    p.add_argument("--space", nargs=4, action="append",
                   metavar=("NAME", "GENERATED", "REFERENCE", "VALIDATION"),
                   help="statistics files of one space; VALIDATION is held-out real statistics or a valFD number")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_fdr)

    p = commands.add_parser("serve", help="run the evaluation service (references, evaluations, canaries, history)")
    from fastfid.service.config import add_arguments

    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes sharing the store (default 1)")
    add_arguments(p)
    p.set_defaults(run=_serve)

    p = commands.add_parser("token", help="the service's bearer tokens: create (printed once, stored hashed), "
                                          "revoke, list")
    p.add_argument("action", choices=("create", "revoke", "list"))
    p.add_argument("name", nargs="?", help="who the token is for (recorded as uploader / submitter)")
    p.add_argument("--scope", choices=("read", "evaluate", "admin"),
                   help="for create: read; evaluate (post evaluations, and read); admin (references and canaries too)")
    _add_store_arguments(p)
    p.set_defaults(run=_token)

    p = commands.add_parser("submit", help="post statistics (.npz; several are shards) or features (.npy) to the "
                                           "service as one evaluation")
    p.add_argument("files", nargs="+")
    p.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", help="a write token (default: $FASTFID_TOKEN)")
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--reference", required=True, help="the reference's name in the service (for a file of several "
                                                       "spaces, each space's is REFERENCE.SPACE)")
    p.add_argument("--valfd", action="append", metavar="NAME=VALUE",
                   help="for a file of several spaces: each space's valFD, for FDr^k (repeatable)")
    p.add_argument("--train-seed", type=int)
    p.add_argument("--sample-seed", type=int)
    p.add_argument("--baseline", help="compare with MODEL or MODEL@CHECKPOINT instead of the previous checkpoint")
    p.add_argument("--feature-space", help="for files that name none (pytorch-fid's, clean-fid's)")
    p.add_argument("--retries", type=int, default=5, help="tries after a connection failure or 502/503/504")
    p.add_argument("--json", action="store_true", help="print the stored evaluation as JSON")
    _add_log_argument(p)
    p.set_defaults(run=_submit)

    p = commands.add_parser("adm", help="OpenAI's ADM evaluator without TensorFlow: Inception Score, FID, sFID, "
                                        "precision and recall of a sample batch against a reference batch (.npz)")
    p.add_argument("ref_batch", help="the reference batch, e.g. VIRTUAL_imagenet256_labeled.npz, or its name "
                                     "(adm/imagenet256: fetched once, see `fastfid references`)")
    p.add_argument("sample_batch", type=Path, help="the sample batch: arr_0, uint8 N x H x W x 3")
    p.add_argument("--weights", help="FID Inception weights file (default: pytorch-fid's, found or downloaded)")
    p.add_argument("--device", help="torch device of the network (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64, ADM's)")
    p.add_argument("--no-cache", action="store_true", help="recompute the reference batch's activations")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_adm)

    p = commands.add_parser("cmmd", help="CMMD (Jayasumana et al. 2024): the biased MMD^2 of CLIP ViT-L/14-336 "
                                         "embeddings with a Gaussian kernel, sigma 10, times 1000, in float64")
    p.add_argument("generated", help="the generated images (folder, zip, .npy of images) or their embeddings (.npy "
                                     "of (n, d), or a saved .npz)")
    p.add_argument("reference", help="the reference's, the same ways; a .npz saved with --save-reference keeps its "
                                     "own kernel sum")
    p.add_argument("--save-reference", metavar="PATH", help="also save the reference's embeddings and kernel sum "
                                                            "(.npz), to compare more sets with it later")
    p.add_argument("--resize", choices=("cmmd", "cmmd-pytorch"), help="images' preprocessing: google-research's "
                   "(cmmd, the default: centre square, PIL bicubic to 336) or cmmd-pytorch's (torch bicubic)")
    p.add_argument("--weights", help="the CLIP ViT-L/14-336 weights file (default: OpenAI's, from the HF hub cache)")
    p.add_argument("--device", help="torch device of the network (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--num-workers", type=int, help="image loading processes (default: cores, at most 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_cmmd)

    p = commands.add_parser("references", help="the published reference statistics by name (clean-fid, EDM, EDM2, "
                                               "ADM) and which are on this machine; `fetch NAME...` downloads them")
    p.add_argument("action", nargs="?", choices=("list", "fetch"), default="list")
    p.add_argument("names", nargs="*", metavar="NAME", help="with fetch: the references to download")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_references)

    p = commands.add_parser("selftest", help="check fastfid's kernels on a GPU and print a report to paste into an "
                                             "issue (build, machine, each variant's validation, accuracy, routes)")
    p.add_argument("--device", help="the CUDA device to check (default: the current one, e.g. cuda:0)")
    p.add_argument("--emulated", metavar="sm_XY", help="check on the CPU under the emulated driver of this GPU "
                                                      "architecture instead (e.g. sm_89, sm_90), at smaller sizes")
    p.add_argument("--benchmark", action="store_true", help="also time the GPU benchmark's tables (statistics of "
                                                           "50,000 x 2048, FD at 2048 and 4096) beside torch's")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", type=Path, help="also write selftest.md and selftest.json into this folder")
    p.set_defaults(run=_selftest)
    return parser


def _adm(args) -> int:
    from fastfid.adm import evaluate

    result = evaluate(args.ref_batch, args.sample_batch, weights=args.weights, device=args.device,
                      batch_size=args.batch_size, progress=sys.stderr.isatty(), cache=not args.no_cache)
    print(json.dumps(result.to_dict()) if args.json else "\n".join(result.lines()))
    return 0


def _cmmd(args) -> int:
    from fastfid.mmd import as_embeddings, cmmd

    if args.save_reference:
        check_writable(args.save_reference, inputs=[args.generated, args.reference])
    options = dict(weights=args.weights, device=args.device, batch_size=args.batch_size, resize=args.resize,
                   num_workers=args.num_workers, progress=not args.quiet)
    reference = as_embeddings(args.reference, "reference", **options)
    result = cmmd(args.generated, reference, **options)
    if args.save_reference:
        reference.save(args.save_reference)
    print(json.dumps(result.as_dict()) if args.json else result)
    return 0


def _references(args) -> int:
    from fastfid import references

    if args.action == "fetch":
        if not args.names:
            raise ValueError("fetch which? `fastfid references fetch NAME ...` (`fastfid references` lists the names)")
        for name in args.names:
            path = references.fetch(name, progress=not args.quiet)
            print(f"{name} -> {path}", file=sys.stderr)
        return 0
    if args.names:
        raise ValueError("`fastfid references` lists them all; give names to `fastfid references fetch`")
    rows = [references.cached(name) for name in references.reference_names()]
    if args.json:
        print(json.dumps([{"name": c.reference.name, "url": c.reference.url, "format": c.reference.format,
                           "spaces": list(c.reference.spaces), "resize": c.reference.resize,
                           "images": c.reference.images, "sha256": c.reference.sha256,
                           "cached": None if c.size is None else str(c.path), "bytes": c.size} for c in rows]))
        return 0
    print(f"references in {references.references_dir()} (SHA-256: none of the publishers gives one; the first "
          "download's is recorded and checked at every later read)")
    for c in rows:
        images = "" if c.reference.images is None else f"{c.reference.images:,} images"
        here = "-" if c.size is None else size_text(c.size)
        print(f"{c.reference.name:48} {c.reference.format:13} {c.reference.resize:18} {images:18} {here}")
    return 0


def _selftest(args) -> int:
    """0 when every check passed, 1 when one failed (the report says which), 2 when there is no GPU to check."""
    from fastfid import selftest

    report = selftest.run(args.device, emulated=args.emulated, benchmark=args.benchmark)
    print(report.to_json() if args.json else report.text(), end="" if not args.json else "\n")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "selftest.md").write_text(report.text())
        (args.out / "selftest.json").write_text(report.to_json())
    return 0 if report.passed else 1 if report.checked else 2


def _add_spaces_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spaces", metavar="NAME,NAME,...",
                   help="several representation spaces in one pass over the images (each image decoded once), e.g. "
                        "inception,dinov2-vit-l14,clip-vit-l-14; their statistics go in one file")
    p.add_argument("--valfd", action="append", metavar="NAME=VALUE",
                   help="a space's valFD (FD of held-out real images to the reference), repeatable: stored in the "
                        "reference file by stats, used by fdr (over the one the reference carries)")


def _add_store_arguments(p: argparse.ArgumentParser) -> None:
    from fastfid.service.config import add_arguments

    add_arguments(p, only=("store", "database_url"))


def _add_log_argument(p: argparse.ArgumentParser) -> None:
    from fastfid.tracking import TRACKERS

    p.add_argument("--log", action="append", choices=TRACKERS,
                   help="also record the result in MLflow ($MLFLOW_TRACKING_URI), W&B ($WANDB_*) or TensorBoard "
                        "(./runs); repeatable")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"fastfid: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Every failure is one line on stderr; with FASTFID_DEBUG=1 its traceback comes first, whatever
    the exception."""
    import os
    import traceback
    import warnings

    warnings.formatwarning = _one_line_warning  # a command line prints messages, not source lines
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        print("fastfid: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except SystemExit:
        raise
    except BaseException as error:
        if os.environ.get("FASTFID_DEBUG"):
            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        return _report(error)
    finally:
        _shut_down_process_group()


# What a user's input or machine can cause: said in one line, without the exception's class.
_EXPECTED = (ValueError, TypeError, OSError, ImportError, RuntimeError, EOFError)


def _report(error: BaseException) -> int:
    """The one line a failure prints on stderr, and the exit status."""
    if isinstance(error, KeyboardInterrupt):  # a checkpointed job's Interrupted says where its progress is
        print(f"fastfid: {str(error) or 'interrupted'}", file=sys.stderr)
        return 130
    if isinstance(error, MemoryError):
        print(f"fastfid: error: out of memory{f': {error}' if str(error) else ''}", file=sys.stderr)
        return 1
    if isinstance(error, _EXPECTED):
        # Notes say what a failed job kept and how to go on (its saved progress), on the same line.
        print("; ".join([f"fastfid: error: {error}", *getattr(error, "__notes__", ())]), file=sys.stderr)
        return 1
    print(f"fastfid: error: {type(error).__name__}: {error} (FASTFID_DEBUG=1 shows where)", file=sys.stderr)
    return 1


def _shut_down_process_group() -> None:
    """Under torchrun: leave the process group cleanly (an exit with it open can abort)."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
