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


def plot_benchmark(path: str | Path, curves: dict[str, np.ndarray], tolerance: float, title: str) -> None:
    """Median best |gap - T| per trial with the 25-75% band, one line per engine (``curves``: runs x trials)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for k, (name, c) in enumerate(curves.items()):
        c = np.maximum(c, 1e-4)
        x = np.arange(1, c.shape[1] + 1)
        ax.plot(x, np.median(c, axis=0), color=f"C{k}", label=f"{name} (median of {c.shape[0]})")
        ax.fill_between(x, np.percentile(c, 25, axis=0), np.percentile(c, 75, axis=0), color=f"C{k}", alpha=0.15)
    ax.axhline(tolerance, color="k", ls="--", lw=1, label=f"tolerance {tolerance:g} eV")
    ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.set_ylabel("best |gap - target| so far (eV)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
