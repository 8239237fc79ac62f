"""Drop-ins for the FID libraries people already use: change one import, keep every number.

- ``fastfid.compat.pytorch_fid``: pytorch-fid's ``fid_score`` functions and command line and its
  ``InceptionV3`` (``fastfid.compat.pytorch_fid.inception``).
- ``fastfid.compat.torchmetrics``: ``FrechetInceptionDistance``, ``KernelInceptionDistance`` and
  ``InceptionScore`` as ``torchmetrics.Metric`` subclasses (needs torchmetrics).
- ``fastfid.compat.cleanfid``: clean-fid's ``compute_fid`` / ``compute_kid`` with its modes and
  custom statistics.
- ``fastfid.compat.torch_fidelity``: torch-fidelity's ``calculate_metrics``.

Each is a thin layer over fastfid's one core: the same preprocessing as the peer (fastfid's
``resize`` modes), the same network, exact float64 statistics and the exact trace term. Only
``fastfid.compat.torchmetrics`` needs its peer installed, because it subclasses its ``Metric``.
"""
