"""Where fastfid keeps what it downloads, caches and records: ``$FASTFID_HOME``, by default
``~/.cache/fastfid``."""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "FASTFID_HOME"


def fastfid_home() -> Path:
    return Path(os.environ.get(HOME_VARIABLE) or Path.home() / ".cache" / "fastfid")
