"""Plots shared by the chapters: learner functions as surfaces, loss curves.

A "learner function" here is a map of two inputs to one output, the way §5.1 plots
the |m| = 1 learners (Figs. 4-7): f(m, x), g_lin(m, w), g_loss(prediction, target)
and g_relu(m, z).
"""

from __future__ import annotations

import itertools

import numpy as np

from mplp.core.functions import DEFAULT_RANGES, FUNCTIONS, Fn2, grid, sgd_function  # noqa: F401  (the figures' names)


def surface(ax, fn: Fn2, a_range, b_range, labels=("a", "b"), title: str = "", n: int = 41, cmap="viridis"):
    """Draw ``fn`` over the rectangle on a 3D axis ``ax``."""
    A, B, Z = grid(fn, a_range, b_range, n)
    ax.plot_surface(A, B, Z, cmap=cmap, linewidth=0, antialiased=True)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title, fontsize=10)
    return ax


def function_panels(fns: dict[str, Fn2], ranges: dict | None = None, n: int = 41, ncols: int = 2,
                    panel_size=(4.2, 3.6)):
    """One 3D panel per learner function in ``fns`` (keys from ``FUNCTIONS``), ``ncols`` a row."""
    import math

    import matplotlib.pyplot as plt

    ranges = {**DEFAULT_RANGES, **(ranges or {})}
    nrows = math.ceil(len(fns) / ncols)
    fig = plt.figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    for i, (name, fn) in enumerate(fns.items()):
        a_label, b_label, title = FUNCTIONS[name]
        ax = fig.add_subplot(nrows, ncols, i + 1, projection="3d")
        surface(ax, fn, *ranges[name], labels=(a_label, b_label), title=title, n=n)
    fig.tight_layout()
    return fig


def overlaid_curves(ax, curves: dict[str, np.ndarray], styles: dict | None = None, xlabel="inner step",
                    ylabel="inner loss", log: bool = False):
    """Loss curves on one axis; ``styles[name]`` are keyword arguments of ``ax.plot``."""
    styles = styles or {}
    for name, c in curves.items():
        ax.plot(np.arange(len(c)), c, label=name, **styles.get(name, {}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend()
    return ax


def compare_panels(pairs: dict[str, tuple[Fn2, Fn2]], ranges: dict, titles=("learned", "SGD (Table 2)"),
                   n: int = 41, panel_size=(4.2, 3.4)):
    """One row per function: the learned surface next to the SGD one, over ``ranges[name]``
    (thesis Figs. 4-7 and 12)."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(panel_size[0] * 2, panel_size[1] * len(pairs)))
    for r, (name, fns) in enumerate(pairs.items()):
        a_label, b_label, title = FUNCTIONS[name]
        for c, fn in enumerate(fns):
            ax = fig.add_subplot(len(pairs), 2, 2 * r + c + 1, projection="3d")
            surface(ax, fn, *ranges[name], labels=(a_label, b_label), title=f"{titles[c]}: {title}", n=n,
                    cmap="viridis" if c == 0 else "cividis")
    fig.tight_layout()
    return fig


def grid_panels(cell_curves: dict, baselines: dict[str, float] | None = None, band: str = "min-max"):
    """Figure 8: validation loss of every ablation cell, median over seeds and its
    min-max band; columns |m| = 1, 8; rows learned lr (top), fixed lr (bottom); colour
    by batch-norm; the y-axis stops at twice the highest median (bands beyond are clipped).
    ``cell_curves``: ``{Cell: (steps (V,), losses (n_seeds, V))}``;
    ``baselines``: ``{label: loss}`` drawn as horizontal lines on every panel."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(7.6, 5.4), sharex=True, sharey=True)
    colours = {False: "C0", True: "C3"}
    for cell, (steps, L) in cell_curves.items():
        ax = axes[0 if cell.learned_lr else 1, 0 if cell.message_size == 1 else 1]
        c = colours[cell.batch_norm]
        ax.plot(steps, np.median(L, 0), color=c, lw=1.5,
                label=f"batch-norm {'on' if cell.batch_norm else 'off'} (median of {len(L)})")
        ax.fill_between(steps, L.min(0), L.max(0), color=c, alpha=0.2, lw=0)
    for (i, lr), (j, m) in itertools.product(enumerate(("learned", "fixed")), enumerate((1, 8))):
        axes[i, j].set_title(f"|m| = {m}, {lr} lr", fontsize=10)     # a panel none of whose cells ran keeps it
    # y-range: from below every baseline and run to twice the highest median, so that one
    # diverged seed (its band is clipped) does not flatten every curve
    medians = np.concatenate([np.median(L, 0) for _, L in cell_curves.values()])
    lows = np.concatenate([L.min(0) for _, L in cell_curves.values()] + [np.asarray(list((baselines or {}).values()))])
    finite_m, finite_l = medians[np.isfinite(medians)], lows[np.isfinite(lows) & (lows > 0)]
    for ax in axes.flat:
        for k, (label, v) in enumerate((baselines or {}).items()):
            ax.axhline(v, color=("k", "C2", "C1")[k % 3], ls="--", lw=1, label=label)
        ax.set_yscale("log")
        if len(finite_m) and len(finite_l):
            ax.set_ylim(0.8 * finite_l.min(), 2 * finite_m.max())
    for ax in axes[1]:
        ax.set_xlabel("outer step")
        steps_in_thousands(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation outer-loss")
    legend = {}                              # every label once, wherever its cell was drawn
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, h)
    axes[0, 0].legend(legend.values(), legend.keys(), fontsize=7)
    fig.tight_layout()
    return fig


def robust_ylim(ax, ys, margin: float = 0.08) -> float:
    """Set ``ax``'s y-range from the plotted values ``ys`` (a list of arrays) without their
    outliers, so that one diverged value cannot set the scale: a value is an outlier when it
    lies more than ``max(10 MAD, |median| / 2)`` above the median.  Mark the outliers with
    ``mark_clipped``.  Returns the top of the range."""
    vals = np.concatenate([np.asarray(y, float).ravel() for y in ys])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return float("nan")
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med)))
    kept = vals[vals <= med + max(10 * mad, abs(med) / 2)]
    lo, hi = float(kept.min()), float(kept.max())
    pad = margin * max(hi - lo, 1e-12)
    ax.set_ylim(lo - pad, hi + pad)
    return hi + pad


def mark_clipped(ax, x, y, top: float, color="k") -> int:
    """Triangles at the top edge where ``y > top`` (annotated with the value); returns how many."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    over = np.isfinite(y) & (y > top)
    lo, hi = ax.get_xlim()
    gap, last = 0.06 * abs(hi - lo), -np.inf          # neighbouring marks share one label (legible)
    for xi, yi in zip(x[over], y[over]):
        ax.plot([xi], [top], marker="^", color=color, ms=6, clip_on=False)
        if xi - last >= gap:
            near = y[over][(x[over] >= xi) & (x[over] < xi + gap)]
            v = near.max()                                   # "249653" would run into its neighbours
            ax.annotate(f"{v:.0f}" if v < 1e4 else f"{v:.1e}".replace("e+0", "e").replace("e+", "e"), (xi, top), textcoords="offset points", xytext=(4, -10), fontsize=7,
                        color=color)
            last = xi
    return int(over.sum())


def below_axis(ax, value: float, label: str) -> bool:
    """Say in the panel when a reference level (e.g. tuned Adam) lies below the y-range that
    the runs set; returns whether it does."""
    lo = ax.get_ylim()[0]
    if not value < lo:
        return False
    ax.annotate(f"{label}: {value:.1f} (below the axis)", (0.02, 0.03), xycoords="axes fraction", fontsize=7)
    return True


def steps_in_thousands(ax) -> None:
    """Label ``ax``'s x-axis (outer steps) in thousands: "0", "20k", "40k"."""
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:.0f}k" if x else "0"))


def budget_range(ax, reached: int, thesis_steps: int, planned: int | None = None) -> None:
    """Show on ``ax`` how far a run got against the thesis' outer steps: the x-axis
    runs to the steps reached (or ``planned``, the run's own S), and a bar above the panel
    spans the thesis' budget, filled up to ``reached``, so the curves stay legible; steps are
    labelled in thousands."""
    end = max(reached, planned or 0)
    ax.set_xlim(0, end * 1.01)
    steps_in_thousands(ax)
    bar = ax.inset_axes([0.0, 1.015, 1.0, 0.045])
    bar.barh([0], [thesis_steps], color="0.92", edgecolor="0.6", lw=0.6, height=1)
    bar.barh([0], [reached], color="0.35", height=1)
    bar.set_xlim(0, thesis_steps)
    bar.set_ylim(-0.5, 0.5)
    bar.axis("off")
    bar.text(0.99, 0.5, f"{reached:,} of the thesis' {thesis_steps:,} steps ({reached / thesis_steps:.0%})",
             transform=bar.transAxes, ha="right", va="center", fontsize=6.5, color="k",
             bbox={"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})  # legible over the fill
    ax.title.set_y(1.075)


def seed_curves(ax, arms: dict, baselines: dict[str, float], thesis_steps: int,
                seed_names: list[str] | None = None) -> float:
    """Pre-registered runs on the thesis' budget (x-axis to ``thesis_steps``): every seed thin,
    each arm's median over its seeds thick, ``baselines`` (``{label: loss}``) as horizontal
    lines; the y-range is ``robust_ylim``'s and values above it are marked at the top edge.
    ``arms``: ``{label: (colour, steps (V,), losses (n_seeds, V))}``; ``seed_names`` (one arm):
    each seed then gets its own colour and legend entry.  Returns the y-range's top."""
    def colour(c, k):
        return f"C{k}" if seed_names else c

    for label, (c, steps, L) in arms.items():
        for k, y in enumerate(L):
            ax.plot(steps, y, color=colour(c, k), lw=0.6, alpha=0.8 if seed_names else 0.45,
                    label=seed_names[k] if seed_names else None)
        ax.plot(steps, np.median(L, 0), color=c, lw=1.6, label=f"{label}: median of {len(L)} seeds")
    for k, (label, v) in enumerate(baselines.items()):
        ax.axhline(v, color="k", ls=("--", ":")[k % 2], lw=1, label=label)
    ax.set_xlim(0, thesis_steps)
    top = robust_ylim(ax, [y for _, _, L in arms.values() for y in L] + [np.asarray(list(baselines.values()), float)])
    for c, steps, L in arms.values():
        for k, y in enumerate(L):
            mark_clipped(ax, steps, y, top, color=colour(c, k))
    ax.set(xlabel="outer step", ylabel="validation outer-loss")
    return top


def pair_panels(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], baselines: dict[str, float],
                thesis_steps: int, planned: int | None = None, colours=("C3", "C0")):
    """One panel per comparison of two configurations, each drawn as its seeds' median (line)
    and min-max range (band) of validation outer-loss, with ``baselines`` as dashed lines and
    a bar above each panel marking how far its runs got against the thesis' budget
    (``budget_range``; ``planned``: the runs' own S, the x-axis' end).
    ``panels``: ``{title: {label: (steps (V,), losses (n_seeds, V))}}``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7.6, 3.6), sharey=True, squeeze=False)
    lows, highs = [v for v in baselines.values() if v > 0], []
    for ax, (title, arms) in zip(axes[0], panels.items()):
        for c, (label, (steps, L)) in zip(colours, arms.items()):
            ax.plot(steps, np.median(L, 0), color=c, lw=1.4, label=f"{label} (median of {len(L)})")
            ax.fill_between(steps, L.min(0), L.max(0), color=c, alpha=0.2, lw=0)
            finite = L[np.isfinite(L)]
            lows.append(float(finite.min()))
            highs.append(float(np.median(L, 0)[np.isfinite(np.median(L, 0))].max()))
        for k, (label, v) in enumerate(baselines.items()):
            ax.axhline(v, color=("k", "0.45")[k % 2], ls="--", lw=1, label=label)
        budget_range(ax, max(int(steps[-1]) for steps, _ in arms.values()), thesis_steps, planned)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("outer step")
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper right")
    axes[0, 0].set_ylabel("validation outer-loss")
    axes[0, 0].set_ylim(0.85 * min(lows), 1.3 * max(highs))
    fig.tight_layout()
    return fig


def ledger_heatmap(chapters: list[str], outcomes: list[str], counts: np.ndarray, colours: list[str]):
    """The ledger at a glance (seaborn): claims per chapter (rows) and label (columns), each
    column tinted with its label's colour, annotated with the count.
    ``counts (len(chapters), len(outcomes))``; ``colours``: each label's background colour."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import LinearSegmentedColormap

    fig, axes = plt.subplots(1, len(outcomes), figsize=(7.6, 0.45 * len(chapters) + 1.1),
                             gridspec_kw={"wspace": 0.04})
    top = max(1, int(counts.max()))
    for j, (ax, name) in enumerate(zip(np.atleast_1d(axes), outcomes)):
        cmap = LinearSegmentedColormap.from_list(f"label{j}", ["#ffffff", colours[j]])
        sns.heatmap(counts[:, [j]], ax=ax, cmap=cmap, vmin=0, vmax=0.6 * top, cbar=False, annot=True, fmt="d",
                    linewidths=0.5, linecolor="0.85", annot_kws={"fontsize": 9},
                    yticklabels=chapters if j == 0 else False, xticklabels=[name])
        ax.tick_params(axis="x", labelrotation=0, labelsize=7.5)
        ax.tick_params(axis="y", labelrotation=0, labelsize=8, length=0)
        ax.xaxis.tick_top()
    fig.subplots_adjust(left=0.15, right=0.99, top=0.86, bottom=0.02)
    return fig


def seed_finals(groups: dict[str, list[float]], baselines: dict[str, float], ylabel: str = "final validation outer-loss"):
    """Final loss of every seed, one column per group of runs (seaborn strip plot with each
    group's median as a bar), with ``baselines`` as dashed lines: the spread over seeds that a
    median line hides.  ``groups``: ``{label: [final loss per seed]}``."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame([(g, float(v)) for g, vs in groups.items() for v in vs], columns=["group", "loss"])
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    sns.stripplot(data=df, x="group", y="loss", ax=ax, size=7, jitter=0.08, color="C3", alpha=0.85)
    sns.pointplot(data=df, x="group", y="loss", ax=ax, estimator="median", errorbar=None, linestyles="none",
                  markers="_", markersize=28, color="k")
    for k, (label, v) in enumerate(baselines.items()):
        ax.axhline(v, color=("k", "0.45")[k % 2], ls="--", lw=1, label=label)
    ax.set(xlabel="", ylabel=ylabel)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
