"""A benchmark's plots: ``curves.png`` (one target, many seeds: :func:`plot_benchmark`) and ``targets.png`` (many
targets: :func:`plot_targets`, per band of targets: :func:`target_bands`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gapseek.search.campaign.report import pyplot

__all__ = ["plot_benchmark", "plot_targets", "target_bands"]


def plot_benchmark(path: str | Path, curves: dict[str, np.ndarray], first_hits: dict[str, np.ndarray],
                   random_found: np.ndarray, tolerance: float, title: str, footer: str | None = None) -> None:
    """Left: the share of campaigns with a hit by each trial, per engine (``first_hits``: one trial number per
    run, budget + 1 for none), against random's exact expectation (``random_found``: ``budget``). Right, one small
    panel per engine: the best |gap - T| among each campaign's own trials (``curves``: runs x trials), median line
    and 25-75% band, random's median for reference. A caption under the plots says what is drawn, then
    ``footer`` (where the crystals came from)."""
    plt = pyplot()
    from matplotlib.patches import Patch

    names = list(first_hits)
    budget = len(random_found)
    t = np.arange(1, budget + 1)
    colour = {name: f"C{k % 10}" for k, name in enumerate(names)}
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    styles = ["-", (0, (5, 2)), "-.", (0, (1, 1.2))]
    n = max(len(names), 1)
    nc = 1 if n == 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    nr = -(-n // nc)
    fig = plt.figure(figsize=(6.5 + 3.0 * nc, max(5.2, 2.5 * nr) + 1.0))
    gs = fig.add_gridspec(nr, 1 + nc, width_ratios=[2.4] + [1.0] * nc)
    left = fig.add_subplot(gs[:, 0])

    # left: staggered markers, so that engines on the same line (all at 0, say) each stay visible
    step = max(n, budget // 6)  # every engine's markers on trials of their own
    left.plot(t, random_found, color="0.45", lw=5, alpha=0.45, solid_capstyle="butt",
              label="random picking, exact expectation\nfor the same priors")
    for k, name in enumerate(names):
        fh = np.asarray(first_hits[name])
        found = (fh[:, None] <= t[None, :]).mean(axis=0)
        left.step(t, found, where="post", color=colour[name], ls=styles[k % len(styles)], lw=1.6,
                  marker=markers[k % len(markers)], ms=6, markevery=(k * step // n, step), mec="k", mew=0.4,
                  label=f"{name}: {len(fh)} runs, {np.mean(fh <= budget):.0%} found a hit")
    left.set_xlim(0.5, budget + 0.5)
    left.set_ylim(-0.04, 1.04)  # lines at 0 and 1 drawn inside the frame, not on it
    left.axhline(0, color="0.8", lw=0.6, zorder=0)
    left.set_xlabel("trial t")
    left.set_ylabel(f"share of campaigns with a hit (|gap − T| ≤ {tolerance:g} eV) by trial t")
    left.set_title("campaigns that found a hit", fontsize=10)
    left.grid(alpha=0.25)
    left.legend(fontsize=8, loc="upper left")

    # right: one panel per engine, same axes
    floor = 1e-4
    ref = np.median(np.maximum(curves["random"], floor), axis=0) if "random" in curves else None
    first = None
    for k, name in enumerate(names):
        ax = fig.add_subplot(gs[k // nc, 1 + k % nc], sharex=first, sharey=first)
        first = first or ax
        c = curves.get(name)
        if ref is not None and name != "random":
            ax.plot(np.arange(1, ref.size + 1), ref, color="0.35", lw=1.2, ls=(0, (4, 2)), label="random's median")
        if c is not None and c.size:
            c = np.maximum(c, floor)
            x = np.arange(1, c.shape[1] + 1)
            ax.fill_between(x, np.percentile(c, 25, axis=0), np.percentile(c, 75, axis=0), color=colour[name],
                            alpha=0.25, lw=0, label="middle 50% of campaigns")
            ax.plot(x, np.median(c, axis=0), color=colour[name], lw=2, marker=markers[k % len(markers)], ms=4,
                    markevery=(0, step), mec="k", mew=0.4, label="median campaign")
        else:
            ax.text(0.5, 0.5, "no campaign ran\nthe full budget", ha="center", va="center", fontsize=8,
                    transform=ax.transAxes)
        ax.axhline(tolerance, color="C3", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{name} ({0 if c is None else len(c)} runs)", fontsize=9, color=colour[name])
        ax.tick_params(labelsize=8)
        if k % nc == 0:
            ax.set_ylabel("best |gap − T| so far (eV)", fontsize=8)
        if k // nc == nr - 1 or k + nc >= n:
            ax.set_xlabel("trial", fontsize=8)
    fig.suptitle(title)
    caption = (f"Left: the share of each engine's campaigns that have found a hit by trial t; the broad grey line is "
               f"what picking at random gives, computed exactly for the same priors. Right: the best |gap − T| among "
               f"a campaign's own trials (its prior not counted), one panel per engine: the line is the median "
               f"campaign, the shaded band the middle 50% of campaigns (25th–75th percentile); dashed red: the "
               f"tolerance, {tolerance:g} eV (values below {floor:g} eV drawn at {floor:g})."
               + (f" {footer}." if footer else ""))
    fig.text(0.01, 0.01, caption, fontsize=8, wrap=True, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.07 if nr > 1 else 0.1, 1, 0.9))
    # one key for the small panels, above them, where it hides no data
    key = [(plt.Line2D([], [], color="0.3", lw=2), "median"),
           (Patch(color="0.3", alpha=0.25, lw=0), "middle 50% of campaigns"),
           (plt.Line2D([], [], color="0.35", lw=1.2, ls=(0, (4, 2))), "random's median"),
           (plt.Line2D([], [], color="C3", lw=1, ls="--"), "tolerance")]
    if ref is None:
        key.pop(2)
    x0 = fig.axes[1].get_position().x0 if len(fig.axes) > 1 else 0.5
    fig.legend(*zip(*key), loc="lower left", bbox_to_anchor=(x0 - 0.01, 0.9), ncol=len(key), fontsize=8,
               frameon=False, handlelength=2.2, columnspacing=1.2)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def target_bands(targets, width: float = 0.5) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Each target's band (index) and the bands' (low, high) edges: ``width`` eV from the lowest target, the
    highest target in the last band (1.0-4.0 gives 1-1.5, ..., 3.5-4, 4.0 in the last, not in a band of its own)."""
    t = np.asarray(targets, dtype=float)
    lo = float(t.min())
    nb = max(1, int(round((float(t.max()) - lo) / width)))
    idx = np.clip(np.floor((t - lo) / width + 1e-9).astype(int), 0, nb - 1)
    edges = [(lo + k * width, lo + (k + 1) * width) for k in range(nb)]
    edges[-1] = (edges[-1][0], max(edges[-1][1], float(t.max())))
    return idx, edges


def plot_targets(path: str | Path, targets: np.ndarray, first_hit: dict[str, np.ndarray], random_exact: np.ndarray,
                 bands: list[dict], budget: int, title: str, window: float = 0.25) -> None:
    """A benchmark over many targets at a glance. Left: each engine's mean first hit per target (``first_hit``:
    engine -> ``len(targets)`` values, NaN where it did not run; censored at ``budget + 1``) as faint points and
    as a running mean over +- ``window`` eV, random's exact expectation as a broad grey line. Right: the
    acceleration over random's exact expectation per band of targets (``bands``, as in targets.json), one bar
    per engine."""
    plt = pyplot()

    targets = np.asarray(targets, dtype=float)
    order = np.argsort(targets)
    targets, random_exact = targets[order], np.asarray(random_exact, dtype=float)[order]
    names = list(first_hit)
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.4), gridspec_kw={"width_ratios": [1.6, 1.0]})

    def running(v: np.ndarray) -> np.ndarray:
        out = np.full(v.size, np.nan)
        for i, t in enumerate(targets):
            m = (np.abs(targets - t) <= window + 1e-9) & np.isfinite(v)
            out[i] = v[m].mean() if m.any() else np.nan
        return out

    left.plot(targets, running(random_exact), color="0.45", lw=5, alpha=0.45, label="random picking (exact)")
    for k, name in enumerate(names):
        v = np.asarray(first_hit[name], dtype=float)[order]
        c = f"C{k % 10}"
        if targets.size > 1:
            left.scatter(targets, v, s=7, color=c, alpha=0.25, lw=0)
        left.plot(targets, running(v), color=c, lw=2, marker=markers[k % len(markers)], ms=5,
                  markevery=max(1, targets.size // 12), mec="k", mew=0.4, label=name)
    left.axhline(budget + 1, color="0.6", lw=0.8, ls=":")
    left.text(targets.min(), budget + 1, " no hit (counted as budget + 1)", fontsize=7, va="bottom", color="0.4")
    left.set_ylim(0, (budget + 1) * 1.1)
    left.set_xlabel("target band gap T (eV)")
    left.set_ylabel("first hit (trial); lower is better")
    left.set_title(f"first hit by target (points: each target; lines: mean over ±{window:g} eV)", fontsize=10)
    left.grid(alpha=0.25)
    left.legend(fontsize=8, loc="upper right")

    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        acc = [b["engines"].get(name, {}).get("acceleration_vs_random_exact", np.nan) for b in bands]
        right.bar(np.arange(len(bands)) + (k - (len(names) - 1) / 2) * width, acc, width, color=f"C{k % 10}",
                  label=name, edgecolor="k", lw=0.3)
    right.axhline(1.0, color="0.45", lw=2, alpha=0.6, label="random (1x)")
    right.set_xticks(np.arange(len(bands)), [f"{b['low']:g}–{b['high']:g}\n({b['targets']})" for b in bands],
                     fontsize=8)
    right.set_xlabel("targets (eV), (how many)")
    right.set_ylabel("acceleration over random (exact); higher is better")
    right.set_title("per band of targets", fontsize=10)
    right.grid(alpha=0.25, axis="y")
    right.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=120)
    plt.close(fig)
