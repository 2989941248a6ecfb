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
