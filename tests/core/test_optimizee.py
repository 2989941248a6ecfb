import math

import pytest
import torch

from mplp.core.optimizee import accuracy, forward, init_params, loss_node, loss_value


def test_init_matches_nn_linear_bounds(gen):
    params = init_params((50, 30, 4), gen)
    assert [tuple(p.shape) for p in params] == [(51, 30), (31, 4)]
    for p, n_in in zip(params, (50, 30)):
        bound = 1 / math.sqrt(n_in)
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.9 * bound  # uniform over the whole interval
    assert not torch.equal(init_params((50, 30, 4), torch.Generator().manual_seed(1))[0], params[0])


def test_forward_equals_torch_modules(gen):
    sizes = (3, 5, 4, 2)
    params = init_params(sizes, gen, torch.float64)
    layers = []
    for i, w in enumerate(params):
        lin = torch.nn.Linear(w.shape[0] - 1, w.shape[1]).double()
        with torch.no_grad():
            lin.weight.copy_(w[:-1].T)
            lin.bias.copy_(w[-1])
        layers += [lin] + ([torch.nn.Tanh()] if i < len(params) - 1 else [])
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    cache = forward(params, x, "tanh")
    assert torch.allclose(cache.output, torch.nn.Sequential(*layers)(x))
    assert len(cache.acts) == 2 and cache.inputs[1].shape == (7, 6)
    assert torch.equal(cache.inputs[0][:, -1], torch.ones(7, dtype=torch.float64))


def test_losses_match_torch(gen):
    out = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    assert torch.allclose(loss_node("mse", out, y).value, torch.nn.functional.mse_loss(out, y) / 2)
    labels = torch.randint(0, 4, (6,), generator=gen)
    node = loss_node("xent", out, labels)
    assert torch.allclose(node.value, torch.nn.functional.cross_entropy(out, labels))
    assert torch.allclose(node.elements.sum(-1).mean(), node.value)
    assert torch.equal(node.target.argmax(-1), labels)


def test_leading_run_dimension_matches_loop(gen):
    sizes = (2, 4, 3)
    runs = [init_params(sizes, gen, torch.float64) for _ in range(3)]
    stacked = [torch.stack(ps) for ps in zip(*runs)]
    x = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (3, 5), generator=gen)
    batched = loss_value("xent", stacked, x, y, "relu")
    looped = torch.stack([loss_value("xent", p, x[i], y[i], "relu") for i, p in enumerate(runs)])
    assert torch.allclose(batched, looped)


def test_accuracy():
    out = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert accuracy(out, torch.tensor([1, 1])).item() == 0.5


def test_unknown_names_are_refused(gen):
    params = init_params((2, 3, 1), gen)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        forward(params, torch.zeros(2, 2), "gelu")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        loss_node("hinge", torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="target shape"):
        loss_node("mse", torch.zeros(2, 1), torch.zeros(2))
