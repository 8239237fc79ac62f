"""OpenAI's ADM evaluator (guided-diffusion's ``evaluations/evaluator.py``) reproduced without
TensorFlow, piece by piece: its batches (``batches``), the three activations it reads from the 2015
Inception graph (``network``), its Inception Score (``scores``) and its precision and recall with
float16 distances (``manifold``), and the five numbers together (``evaluator``: ``evaluate``, and
the ``fastfid adm`` command)."""

from fastfid.adm.batches import ImageBatch, ReferenceStatistics
from fastfid.adm.evaluator import ADMResult, evaluate
from fastfid.adm.manifold import precision_recall
from fastfid.adm.network import ADMInception, Activations, activations
from fastfid.adm.scores import inception_score

__all__ = ["ADMInception", "ADMResult", "Activations", "ImageBatch", "ReferenceStatistics", "activations", "evaluate",
           "inception_score", "precision_recall"]
