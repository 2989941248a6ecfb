import pytest
import torch

from mplp.core.learners import LearnerSpec, NeuralLearners, SGDLearners, batch_norm, init_theta, mlp_apply

SPEC = LearnerSpec(message_size=3, hidden=7, activations=("relu",), loss="mse", batch_norm=True,
                   learned_lr=True, lr=0.01)


def test_theta_has_one_learner_per_node_type(gen):
    theta = init_theta(SPEC, gen)
    names = {k.rsplit(".", 1)[0] for k in theta if k != "lr"}
    assert names == {"f", "g_lin", "g_act.relu", "g_loss.mse"}
    assert theta["f.w1"].shape == (4, 7) and theta["f.w2"].shape == (7, 1)
    assert theta["g_lin.w2"].shape == (7, 3) and theta["g_loss.mse.w1"].shape == (3, 7)
    assert theta["lr"].item() == pytest.approx(0.01)
    assert torch.equal(theta["f.bn_scale"], torch.ones(4))
    short = LearnerSpec(1, 5, ("tanh",), "xent", False, False, 1e-3, "prediction_target")
    t2 = init_theta(short, gen)
    assert "lr" not in t2 and "f.bn_scale" not in t2 and t2["g_loss.xent.w1"].shape == (2, 5)


def test_batch_norm_normalises_over_all_rows(gen):
    x = torch.randn(500, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 3
    y = batch_norm(x, torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(y.std(0), torch.ones(3, dtype=torch.float64), atol=1e-6)
    z = batch_norm(x, 2 * torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(z, 2 * y + 1)


def test_mlp_matches_torch_sequential(gen):
    spec = LearnerSpec(2, 6, ("relu",), "mse", False, False, 1e-3)
    theta = init_theta(spec, gen, torch.float64)
    seq = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).double()
    with torch.no_grad():
        seq[0].weight.copy_(theta["g_lin.w1"].T); seq[0].bias.copy_(theta["g_lin.b1"])
        seq[2].weight.copy_(theta["g_lin.w2"].T); seq[2].bias.copy_(theta["g_lin.b2"])
    x = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    assert torch.allclose(NeuralLearners(theta, spec).g_lin(x), seq(x))
    assert torch.allclose(mlp_apply(theta, "g_lin", x, False), seq(x))


def test_sgd_learners_are_table_2():
    rows = torch.tensor([[2.0, 3.0], [-1.0, 0.5]])
    assert torch.equal(SGDLearners.f(rows), torch.tensor([[6.0], [-0.5]]))
    assert torch.equal(SGDLearners.g_lin(rows), torch.tensor([[6.0], [-0.5]]))
    assert torch.equal(SGDLearners.g_act("relu", torch.tensor([[2.0, -1.0], [2.0, 1.0]])),
                       torch.tensor([[0.0], [2.0]]))
    l = SGDLearners(0.1, "mse", 2)
    assert torch.allclose(l.g_loss("mse", torch.tensor([[0.0, 3.0, 1.0]])), torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="built for loss 'mse'"):
        l.g_loss("xent", torch.zeros(1, 3))
