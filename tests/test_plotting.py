import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from mplp.plotting import FUNCTIONS, function_panels, grid, overlaid_curves, sgd_function


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
