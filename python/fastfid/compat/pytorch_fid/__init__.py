"""pytorch-fid's interface over fastfid: change ``pytorch_fid`` to ``fastfid.compat.pytorch_fid``
in an import (``from fastfid.compat.pytorch_fid import fid_score``, ``...pytorch_fid.inception
import InceptionV3``) or a command (``python -m fastfid.compat.pytorch_fid dir1 dir2``) and keep
the functions, arguments, outputs, files and errors. What changes: statistics are accumulated
exactly in one streaming pass (no (N, 2048) activation array unless you ask for it with
``get_activations``), and the distance is fastfid's exact trace term instead of scipy's sqrtm.
"""

from fastfid.compat.pytorch_fid import fid_score, inception
from fastfid.compat.pytorch_fid.inception import InceptionV3

__all__ = ["InceptionV3", "fid_score", "inception"]
