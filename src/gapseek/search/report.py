"""Outputs people would rather look at: summary numbers and plots (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["engine_summary", "plot_benchmark", "plot_campaign", "write_json"]


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def engine_summary(first_hits: list[int], hits: list[int], budget: int) -> dict:
    fh = np.asarray(first_hits, dtype=float)
    return {
        "first_hit_median": float(np.median(fh)),
        "first_hit_mean": float(np.mean(fh)),
        "found_rate": float(np.mean(fh <= budget)),
        "hits_mean": float(np.mean(hits)),
        "runs": len(first_hits),
    }


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_campaign(path: str | Path, gaps: list[float], ids: list[str], target: float, tolerance: float,
                  title: str) -> None:
    """Best |gap - T| so far per trial (log scale, tolerance drawn) and every measured gap, labelled."""
    plt = _plt()
    gaps_a = np.asarray(gaps)
    err = np.abs(gaps_a - target)
    best = np.minimum.accumulate(err) if err.size else err
    trials = np.arange(1, err.size + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.step(trials, np.maximum(best, 1e-4), where="post", color="C0", label="best |gap - T| so far")
    a.axhline(tolerance, color="C3", ls="--", label=f"tolerance {tolerance:g} eV")
    a.set_yscale("log")
    a.set_xlabel("trial")
    a.set_ylabel("|gap - target| (eV)")
    a.legend()
    hit = err <= tolerance
    b.scatter(trials[~hit], gaps_a[~hit], s=18, color="C0", label="measured")
    b.scatter(trials[hit], gaps_a[hit], s=40, color="C3", marker="*", label="hit")
    b.axhspan(target - tolerance, target + tolerance, color="C3", alpha=0.2)
    b.axhline(target, color="C3", lw=0.8)
    for t, g, cid in zip(trials, gaps_a, ids):
        if abs(g - target) <= max(10 * tolerance, 0.05):
            b.annotate(cid, (t, g), fontsize=7, xytext=(3, 3), textcoords="offset points")
    b.set_xlabel("trial")
    b.set_ylabel("measured band gap (eV)")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_benchmark(path: str | Path, curves: dict[str, np.ndarray], first_hits: dict[str, np.ndarray],
                   random_found: np.ndarray, tolerance: float, title: str) -> None:
    """Left: the share of campaigns with a hit by each trial, per engine (``first_hits``: one trial number per
    run, budget + 1 for none), with random's exact expectation (``random_found``: ``budget``). Right: the median
    best |gap - T| among each campaign's trials, with the 25-75% band (``curves``: runs x trials)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    budget = len(random_found)
    t = np.arange(1, budget + 1)
    colour = {name: f"C{k}" for k, name in enumerate(first_hits)}
    for name, fh in first_hits.items():
        found = (np.asarray(fh)[:, None] <= t[None, :]).mean(axis=0)
        left.step(t, found, where="post", color=colour[name], label=f"{name} ({len(fh)} runs)")
    left.plot(t, random_found, color="k", ls="--", lw=1.2, label="random, exact expectation")
    left.set_xlabel("trial")
    left.set_ylabel("campaigns with a hit so far")
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    for name, c in curves.items():
        c = np.maximum(c, 1e-4)
        x = np.arange(1, c.shape[1] + 1)
        right.plot(x, np.median(c, axis=0), color=colour[name], label=f"{name} (median)")
        right.fill_between(x, np.percentile(c, 25, axis=0), np.percentile(c, 75, axis=0), color=colour[name],
                           alpha=0.12)
    right.axhline(tolerance, color="k", ls="--", lw=1, label=f"tolerance {tolerance:g} eV")
    right.set_yscale("log")
    right.set_xlabel("trial")
    right.set_ylabel("best |gap - target| among the campaign's trials (eV)")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
