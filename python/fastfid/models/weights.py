"""Finding, downloading and checking pytorch-fid's FID Inception weights.

Order: an explicit path, the ``FASTFID_WEIGHTS`` environment variable, the torch hub cache
(``$TORCH_HOME/hub/checkpoints``), then a download from pytorch-fid's release into that cache,
verified by SHA-256 before it is moved into place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
# torch hub names files after the first 8 hex digits of their SHA-256 (6726825d); the whole digest of
# this file (also distributed by torch-fidelity under the same hash) is:
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_VARIABLE = "FASTFID_WEIGHTS"
_TIMEOUT_SECONDS = 60


def fid_weights_path(weights=None) -> Path:
    """The weight file to use: ``weights`` if given, else ``$FASTFID_WEIGHTS``, else the cached or
    freshly downloaded pytorch-fid file."""
    if weights is not None:
        return _existing(Path(weights), "the weights file")
    if os.environ.get(WEIGHTS_VARIABLE):
        return _existing(Path(os.environ[WEIGHTS_VARIABLE]), f"{WEIGHTS_VARIABLE}")
    cached = cache_dir() / FID_WEIGHTS_FILE
    if not cached.exists():
        download(FID_WEIGHTS_URL, cached, FID_WEIGHTS_SHA256, what="the FID Inception weights", advice=(
            f"offline, copy {FID_WEIGHTS_FILE} to this machine and set {WEIGHTS_VARIABLE}=/path/to/{FID_WEIGHTS_FILE} "
            f"(or pass weights=PATH / --weights PATH), or put it at {cached}"))
    return cached


def cache_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def download(url: str, target: Path, sha256: str | None, *, what: str, advice: str) -> None:
    """Fetch ``url`` into ``target`` through a temporary file; nothing is left behind unless the
    SHA-256 matches (where the publisher gives one). ``what`` names the file in errors, ``advice``
    says what to do offline."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as handle:
        try:
            try:
                with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        digest.update(chunk)
                        handle.write(chunk)
            except (urllib.error.URLError, OSError) as error:
                raise OSError(f"cannot download {what} from {url} ({error}): {advice}") from error
            if sha256 is not None and digest.hexdigest() != sha256:
                raise OSError(f"the file downloaded from {url} has SHA-256 {digest.hexdigest()}, expected {sha256}: "
                              f"it was not kept; try again, or fetch it yourself: {advice}")
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.replace(handle.name, target)


def load_fid_weights(model, weights=None) -> str:
    """Load the FID weights into ``model`` (strict: same keys and shapes); returns a short name of
    the weights for the statistics' feature-space description."""
    import torch

    path = fid_weights_path(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a truncated or foreign file
        detail = str(error).strip()
        if not detail or detail.isdigit():  # some of torch's errors are a bare number
            detail = "torch could not parse it"
        raise OSError(f"{path} is not a readable torch weight file: truncated, or not saved by torch.save "
                      f"({type(error).__name__}: {detail}); if it is the cached download, delete it to fetch it "
                      "again") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    # Files saved by old torch versions have no batch-norm step counters; they do not affect eval mode.
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    problems = state_dict_problems(expected, state)
    if problems:
        raise ValueError(f"{path} does not hold the FID Inception-v3 weights: {problems}")
    if untrained_batch_norms(state):
        raise ValueError(f"{path} holds an untrained network: every batch norm has its initial running "
                         "statistics (mean 0, variance 1), so its features vanish and every FID from it is about 0; "
                         f"use pytorch-fid's weights, {FID_WEIGHTS_URL} (offline: copy that file here and set "
                         f"{WEIGHTS_VARIABLE} to its path)")
    model.load_state_dict(state)
    digest = None if path.name == FID_WEIGHTS_FILE else sha256_of(path)
    if digest is None or digest == FID_WEIGHTS_SHA256:  # pytorch-fid's file under any name: one label
        return FID_WEIGHTS_FILE.removesuffix(".pth")
    return f"{path.name}:sha256={digest[:12]}"


def untrained_batch_norms(state: dict) -> bool:
    """True when a state dict has batch norms and every one holds the running statistics a fresh
    module starts with: a network saved before any training (torch's defaults, not weights)."""
    norms = [key.removesuffix("running_var") for key in state if key.endswith("running_var")]
    return bool(norms) and all(
        bool((state[f"{norm}running_var"] == 1).all()) and bool((state[f"{norm}running_mean"] == 0).all())
        for norm in norms if f"{norm}running_mean" in state)


def state_dict_problems(expected: dict, state: dict) -> str | None:
    """How ``state`` fails to fit a network whose state dict is ``expected`` (keys missing, keys
    unexpected, shapes that differ: the first three of each), or None when it fits exactly."""
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(f"{k} {tuple(state[k].shape)} for {tuple(expected[k].shape)}" for k in expected.keys() & state.keys()
                   if tuple(state[k].shape) != tuple(expected[k].shape))
    problems = [f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    return "; ".join(problems) or None


def sha256_of(path: Path) -> str:
    from fastfid._hashing import file_sha256

    return file_sha256(path)
