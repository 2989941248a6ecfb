import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from mplp.book.plotting import FUNCTIONS, function_panels, grid, grid_panels, overlaid_curves, sgd_function


def test_sgd_functions_are_table_2():
    m, b = torch.tensor([[2.0, -1.0]]), torch.tensor([[3.0, 0.5]])
    assert torch.equal(sgd_function("f")(m, b), m * b)
    assert torch.equal(sgd_function("g_lin")(m, b), m * b)
    assert torch.equal(sgd_function("g_relu")(m, b), m * (b > 0))
    assert torch.allclose(sgd_function("g_loss")(m, b), m - b)   # d/dpred (pred - y)^2 / 2
    with pytest.raises(ValueError, match="unknown learner function"):
        sgd_function("g_tanh")


def test_grid_and_panels():
    A, B, Z = grid(sgd_function("f"), (-1, 1), (-2, 2), n=5)
    assert Z.shape == (5, 5) and np.allclose(Z, A * B)
    fig = function_panels({k: sgd_function(k) for k in FUNCTIONS}, n=5)
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt
    ax = plt.figure().gca()
    overlaid_curves(ax, {"a": np.ones(3), "b": np.zeros(3)})
    assert len(ax.lines) == 2


def test_grid_panels_place_cells_by_message_size_and_learned_lr():
    from mplp.chapters.ablation_grid import GRID
    steps = np.arange(4) * 10
    curves = {c: (steps, np.full((3, 4), 1.0 + c.message_size + 10 * c.learned_lr)) for c in GRID}
    fig = grid_panels(curves, {"Adam": 0.5})
    axes = fig.axes
    assert len(axes) == 4
    assert axes[0].get_title() == "|m| = 1, learned lr" and axes[3].get_title() == "|m| = 8, fixed lr"
    # two cells (BN on/off) per panel plus the baseline line; the median is what is drawn
    assert len(axes[3].lines) == 3 and np.allclose(axes[3].lines[0].get_ydata(), 9.0)


def test_grid_panels_clip_a_diverged_seed():
    from mplp.chapters.ablation_grid import GRID
    steps = np.arange(3) * 10
    curves = {c: (steps, np.array([[200.0, 190, 180], [210, 200, 190], [2e9, 205, 185]])) for c in GRID}
    fig = grid_panels(curves, {"Adam": 60.0})
    lo, hi = fig.axes[0].get_ylim()
    assert lo == 0.8 * 60 and hi == 2 * 210          # the highest median (step 0: 200, 210, 2e9)


def test_one_diverged_value_does_not_set_the_scale_and_is_marked():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mplp.book.plotting import below_axis, mark_clipped, robust_ylim

    fig, ax = plt.subplots()
    runs = [np.array([668.0, 229, 228, 228]), np.array([230.0, 229, 222, 221])] + [np.full(4, 228.0)] * 50
    top = robust_ylim(ax, runs)
    assert 228 < top < 240 and ax.get_ylim()[1] == top
    assert mark_clipped(ax, np.arange(4), runs[0], top) == 1       # the 668 is shown at the edge
    assert below_axis(ax, 84.4, "tuned Adam") and not below_axis(ax, 225.0, "x")
    plt.close(fig)


def test_grid_panels_title_every_panel_and_gather_the_legend_when_cells_are_missing():
    from mplp.chapters.ablation_grid import GRID
    steps = np.arange(3) * 10
    only = [c for c in GRID if c.message_size == 8 and not c.learned_lr]
    fig = grid_panels({c: (steps, np.full((2, 3), 5.0)) for c in only}, {"Adam": 1.0})
    assert [a.get_title() for a in fig.axes] == ["|m| = 1, learned lr", "|m| = 8, learned lr",
                                                 "|m| = 1, fixed lr", "|m| = 8, fixed lr"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["Adam", "batch-norm off (median of 2)", "batch-norm on (median of 2)"]


def test_seed_curves_draw_every_seed_each_arms_median_and_keep_a_diverged_seed_off_the_scale():
    import matplotlib.pyplot as plt
    from mplp.book.plotting import seed_curves

    steps = np.arange(4) * 100
    off = np.array([[50.0, 40, 30, 20], [50, 45, 35, 25], [50, 48, 46, 44]])
    on = np.array([[50.0, 49, 48, 47], [50, 49, 48, 1e9], [50, 49, 47, 46]])
    fig, ax = plt.subplots()
    top = seed_curves(ax, {"off": ("C0", steps, off), "on": ("C1", steps, on)}, {"Adam": 10.0}, 1000)
    assert ax.get_xlim() == (0, 1000) and 50 < top < 100      # the 1e9 does not set the scale
    medians = [l for l in ax.lines if "median" in str(l.get_label())]
    assert [l.get_label() for l in medians] == ["off: median of 3 seeds", "on: median of 3 seeds"]
    assert np.allclose(medians[0].get_ydata(), np.median(off, 0)) and np.allclose(medians[1].get_ydata(), np.median(on, 0))
    thin = [l for l in ax.lines if l.get_linewidth() == 0.6]
    assert len(thin) == 6
    assert any(l.get_marker() == "^" and l.get_ydata()[0] == top for l in ax.lines)   # the 1e9, marked at the edge
    plt.close(fig)

    fig, ax = plt.subplots()
    seed_curves(ax, {"all": ("k", steps, off)}, {}, 1000, seed_names=["seed 1", "seed 2", "seed 3"])
    named = [l for l in ax.lines if str(l.get_label()).startswith("seed")]
    assert [l.get_label() for l in named] == ["seed 1", "seed 2", "seed 3"]
    assert [l.get_color() for l in named] == ["C0", "C1", "C2"]
    plt.close(fig)
