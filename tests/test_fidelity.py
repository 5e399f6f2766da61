"""Fidelity: our featurizer against outputs of the ORIGINAL CGCNN code (../shared/reference).

The bar: |diff| <= 1e-4 on prediction, pooled (64) and hidden (32) for every row, except crystals whose 12th
and 13th neighbours tie in distance. For each of those we show the tie explains the difference: rebuilding
only the graph the original way (pymatgen's neighbour order) and running the same model reproduces the
reference within 1e-4.
"""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from conftest import REFERENCE, SHARED, need

from gapseek.batching import collate
from gapseek.cif import read_crystal
from gapseek.graph import GraphSettings, build_graph, build_graph_original

TOL = 1e-4


def _reference(name: str) -> dict[str, np.ndarray]:
    out = {}
    with open(need(REFERENCE / name)) as fh:
        r = csv.reader(fh)
        header = next(r)
        assert header[2] == "prediction" and header[3] == "pooled0" and header[67] == "hidden0"
        for row in r:
            out[row[0]] = np.array(row[2:], dtype=np.float64)
    return out


def _ours(loaded_model, graphs, reduce=True):
    outs = []
    gs = GraphSettings()
    for k in range(0, len(graphs), 128):
        p, pooled, hidden = loaded_model.model(collate(graphs[k:k + 128], loaded_model.atom_init, gs, reduce))
        outs.append(np.concatenate([p[:, None].numpy(), pooled.numpy(), hidden.numpy()], axis=1))
    return np.concatenate(outs)


@pytest.mark.parametrize("reduce", [True, False], ids=["equivalent-atoms-once", "every-atom"])
@pytest.mark.parametrize("ref_name, cif_dir", [
    ("cgcnn-band-gap-mp2582.csv", "data/mp-gap-36k/cifs"),
    ("cgcnn-band-gap-samples.csv", "data/cgcnn-samples"),
])
def test_matches_the_original_code(loaded_model, ref_name, cif_dir, reduce, record_property):
    ref = _reference(ref_name)
    ids = list(ref)
    paths = [need(SHARED / cif_dir) / f"{i}.cif" for i in ids]
    graphs = [build_graph(read_crystal(p)) for p in paths]
    ours = _ours(loaded_model, graphs, reduce)
    expected = np.stack([ref[i] for i in ids])
    err = np.abs(ours - expected).max(axis=1)
    bad = np.nonzero(err > TOL)[0]
    tied = np.array([g.n_tied > 0 for g in graphs])
    n_tied = int(tied.sum())
    print(f"\n{ref_name} (reduce={reduce}): {len(ids)} crystals, {len(ids) - len(bad)} within {TOL:g}; "
          f"{n_tied} have a 12th/13th-neighbour tie between different atoms; {len(bad)} differ, all tied; "
          f"largest |diff| on the others {err[err <= TOL].max():.2g}")
    record_property("n_differ", len(bad))
    untied = [ids[i] for i in bad if not tied[i]]
    assert untied == [], f"differences not explained by a neighbour tie: {untied}"

    # each difference is the tie: the original graph construction through the same model matches
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        orig_graphs = [build_graph_original(Structure.from_file(paths[i])) for i in bad]
    if orig_graphs:
        orig = _ours(loaded_model, orig_graphs, reduce)
        err_orig = np.abs(orig - expected[bad]).max(axis=1)
        assert (err_orig <= TOL).all(), dict(zip([ids[i] for i in bad], err_orig))
    assert len(bad) <= n_tied
