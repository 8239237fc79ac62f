import numpy as np
import pytest


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
