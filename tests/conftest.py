import numpy as np
import pytest

try:  # before any test imports a peer or torchmetrics (the README's examples too): see peers.py
    from support.peers import declare_torchvision_ops

    declare_torchvision_ops()
except ImportError:  # no torch: the torch tests skip
    pass


def pytest_report_header(config):
    import fastfid
    import scipy_openblas32

    return [f"fastfid {fastfid.__version__}, numpy {np.__version__}, scipy-openblas32 {scipy_openblas32.__version__}"]


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(scope="session")
def peer_weights(tmp_path_factory):
    """One random weight file under every name the peers download (pytorch-fid's, torch-fidelity's),
    in a private torch hub cache that TORCH_HOME points at for the session; returns its path."""
    import os

    import torch

    from support.peers import calibrated_state_dict

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
