"""Stage 3 — the model: the CGCNN network (:mod:`~gapseek.model.cgcnn`), its safe loading
(:mod:`~gapseek.model.loading`), where its files come from (:mod:`~gapseek.model.hub`), and graphs collated into
model batches (:mod:`~gapseek.model.collate`)."""

from gapseek.model.cgcnn import CGCNN, Batch
from gapseek.model.loading import LoadedModel, load_model

__all__ = ["CGCNN", "Batch", "LoadedModel", "load_model"]
