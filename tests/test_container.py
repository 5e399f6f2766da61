"""Apptainer cannot run here: the definition file is linted (spython parses it)."""

from __future__ import annotations

import pytest
from conftest import ROOT


def test_singularity_def_has_the_required_sections():
    recipe_mod = pytest.importorskip("spython.main.parse.parsers", reason="spython not installed")
    parser = recipe_mod.SingularityParser(str(ROOT / "Singularity.def"))
    recipes = parser.recipe
    recipe = recipes[next(iter(recipes))] if isinstance(recipes, dict) else recipes
    assert recipe.fromHeader.startswith("pytorch/pytorch:") and "cuda" in recipe.fromHeader
    assert any("pip install" in line for line in recipe.install)
    assert any("download_model" in line for line in recipe.install)  # model baked in, checksum-verified
    assert "gapseek" in recipe.cmd or "gapseek" in str(recipe.entrypoint)
    text = (ROOT / "Singularity.def").read_text()
    assert "%test" in text and "gapseek demo" in text
