"""Feature networks (need torch): the FID Inception-v3 and where its weights come from."""

from fastfid.models.inception import FEATURE_DIMS, FIDInceptionV3
from fastfid.models.weights import FID_WEIGHTS_SHA256, FID_WEIGHTS_URL, WEIGHTS_VARIABLE, fid_weights_path

__all__ = ["FEATURE_DIMS", "FIDInceptionV3", "FID_WEIGHTS_SHA256", "FID_WEIGHTS_URL", "WEIGHTS_VARIABLE",
           "fid_weights_path"]
