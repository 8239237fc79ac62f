"""OpenAI's ADM evaluator (guided-diffusion's ``evaluations/evaluator.py``) reproduced without
TensorFlow, piece by piece: its batches (``batches``), the three activations it reads from the 2015
Inception graph (``network``) and its Inception Score (``scores``). Its float16 precision and recall,
``evaluate`` and the ``fastfid adm`` command are still to come (issue 32)."""

from fastfid.adm.batches import ImageBatch, ReferenceStatistics
from fastfid.adm.network import ADMInception, Activations, activations
from fastfid.adm.scores import inception_score

__all__ = ["ADMInception", "Activations", "ImageBatch", "ReferenceStatistics", "activations", "inception_score"]
