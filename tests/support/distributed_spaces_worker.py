"""Run by test_distributed.py under torchrun: `fastfid` on the command line with the small DINOv2-L
and CLIP-L definitions of the parity tests registered under their names. Usage: worker.py ROOT ARGS...
(ROOT holds dinov2/ and clip/ with their weight files, made by spaces_support)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import support.spaces as spaces_support  # noqa: E402  (applies the tests' torchvision shim)
from fastfid import cli  # noqa: E402
from fastfid.models import spaces  # noqa: E402

spaces.SPACES["dinov2-vit-l14"] = spaces_support.tiny("dinov2-vit-l14", embed_dim=spaces_support.WIDTH,
                                                      depth=spaces_support.DEPTH, num_heads=spaces_support.HEADS)
spaces.SPACES["clip-vit-l-14"] = spaces_support.tiny("clip-vit-l-14", embed_dim=spaces_support.WIDTH,
                                                     depth=spaces_support.DEPTH, num_heads=spaces_support.HEADS)
raise SystemExit(cli.main(sys.argv[1:]))
