"""Options that several commands share, turned into library objects: the model (``--model``, ``--model-sha256``)
and the featurizer's settings."""

from __future__ import annotations

import argparse

from gapseek.featurize import FeaturizeSettings
from gapseek.graph import GraphSettings
from gapseek.model import LoadedModel, load_model
from gapseek.model.hub import PINNED, resolve_model
from gapseek.structure import ReadSettings

__all__ = ["load", "settings"]


def load(args: argparse.Namespace) -> LoadedModel:
    """The model ``--model`` / ``--model-sha256`` name (see :func:`gapseek.model.hub.resolve_model`)."""
    files = resolve_model(args.model)
    expected = args.model_sha256
    if expected is None:
        expected = PINNED["band-gap.pth.tar"].sha256
    elif expected.lower() == "any":
        expected = None
    return load_model(files.checkpoint, files.atom_init, expected_sha256=expected)


def settings(args: argparse.Namespace) -> FeaturizeSettings:
    """The featurizer settings of the command line."""
    return FeaturizeSettings(
        read=ReadSettings(reader=args.reader, disorder=args.disorder, max_atoms=args.max_atoms,
                          max_bytes=max(1, int(args.max_file_size * 1e6))),
        graph=GraphSettings(),
        device=args.device,
        workers=args.workers,
        batch_atoms=args.batch_atoms,
        chunk_size=args.chunk_size,
        timeout=args.timeout,
        memory_limit=args.memory_limit,
        reduce=not args.no_reduce,
    )
