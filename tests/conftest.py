import numpy as np
import pytest

try:  # before any test imports a peer or torchmetrics (the README's examples too): see peers.py
    from peers import declare_torchvision_ops

    declare_torchvision_ops()
except ImportError:  # no torch: the torch tests skip
    pass


def pytest_report_header(config):
    import fastfid
    import scipy_openblas32

    return [f"fastfid {fastfid.__version__}, numpy {np.__version__}, scipy-openblas32 {scipy_openblas32.__version__}"]


def relu_features(rng, n, d, *, offset=0.0, decay=None, dtype=np.float64):
    """ReLU-like features with a decaying spectrum, as Inception pool features look: a Gaussian with
    geometric variances, mixed by a random rotation, shifted and rectified."""
    decay = decay if decay is not None else max(d / 8, 1.0)
    z = rng.standard_normal((n, d)) * np.exp(-np.arange(d) / decay)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return np.maximum(z @ q + offset, 0).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def bilinear_reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) → (C, h, w) by the half-pixel bilinear rule (align_corners=False, no antialiasing), in
    float64: source coordinate (i + 0.5)·H/h − 0.5, clamped at 0, blended with the next pixel."""
    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, src - low

    (r0, r1, rw), (c0, c1, cw) = axis(image.shape[1], size[0]), axis(image.shape[2], size[1])
    rows = image[:, r0] * (1 - rw)[:, None] + image[:, r1] * rw[:, None]
    return rows[:, :, c0] * (1 - cw) + rows[:, :, c1] * cw


def bicubic_reference(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) → (h, w) as PIL resamples with BICUBIC: Keys' cubic (a = −0.5), pixel centres at + 0.5,
    the kernel widened by the scale when shrinking (antialiasing), weights renormalised at the borders."""
    def cubic(x):
        x = np.abs(x)
        return np.where(x < 1, (1.5 * x - 2.5) * x * x + 1, np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0))

    def matrix(n_in, n_out):
        scale = n_in / n_out
        width = max(scale, 1.0)
        weights = np.zeros((n_out, n_in))
        for i in range(n_out):
            centre = (i + 0.5) * scale
            first = max(int(centre - 2 * width + 0.5), 0)
            last = min(int(centre + 2 * width + 0.5), n_in)
            j = np.arange(first, last)
            w = cubic((j - centre + 0.5) / width)
            weights[i, first:last] = w / w.sum()
        return weights

    return matrix(channel.shape[0], size[0]) @ channel @ matrix(channel.shape[1], size[1]).T


@pytest.fixture(scope="session")
def peer_weights(tmp_path_factory):
    """One random weight file under every name the peers download (pytorch-fid's, torch-fidelity's),
    in a private torch hub cache that TORCH_HOME points at for the session; returns its path."""
    import os

    import torch

    from peers import calibrated_state_dict

    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = calibrated_state_dict()
    for name in ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth"):
        torch.save(state, checkpoints / name)
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield checkpoints / "pt_inception-2015-12-05-6726825d.pth"
    if previous is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = previous
