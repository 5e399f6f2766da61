"""Stage 3 — featurize: inputs read, graphed and run through the model in supervised worker processes
(:mod:`~gapseek.featurize.pipeline`, :mod:`~gapseek.featurize.supervise`), settings in
:mod:`~gapseek.featurize.settings`, a whole run into a store in :mod:`~gapseek.featurize.run`."""

from gapseek.featurize.pipeline import Featurizer, featurize_items
from gapseek.featurize.run import FeaturizeResult, featurize_to_store
from gapseek.featurize.settings import FeaturizeSettings, settings_attrs

__all__ = ["FeaturizeResult", "FeaturizeSettings", "Featurizer", "featurize_items", "featurize_to_store",
           "settings_attrs"]
