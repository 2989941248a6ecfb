import torch

from mplp.core.backward import apply_updates, dense_backward, loss_rows
from mplp.core.learners import LearnerSpec, NeuralLearners, init_theta
from mplp.core.optimizee import forward, init_params, loss_node

from helpers import random_batch


class Counting:
    """Learners with fixed simple outputs that count their calls."""

    lr = 0.1

    def __init__(self, m=2):
        self.m, self.calls = m, {"f": 0, "g_lin": 0, "g_act": 0, "g_loss": 0}

    def f(self, rows):
        self.calls["f"] += 1
        return rows[:, -1:]                       # = x_i: update independent of messages

    def g_lin(self, rows):
        self.calls["g_lin"] += 1
        return torch.ones(rows.shape[0], self.m, dtype=rows.dtype)

    def g_act(self, kind, rows):
        self.calls["g_act"] += 1
        return rows[:, :-1]                       # pass the message through

    def g_loss(self, kind, rows):
        self.calls["g_loss"] += 1
        return torch.ones(rows.shape[0], self.m, dtype=rows.dtype)


def _problem(sizes=(3, 5, 4, 2), B=6, loss="mse", seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = init_params(sizes, gen, torch.float64)
    x, y = random_batch(sizes, loss, B, gen)
    cache = forward(params, x, "relu")
    return params, cache, loss_node(loss, cache.output, y)


def test_first_layer_sends_no_messages_and_messages_are_summed():
    params, cache, node = _problem()
    learners = Counting()
    ups = dense_backward(learners, params, cache, node, "relu", "mse")
    assert learners.calls == {"f": 3, "g_lin": 2, "g_act": 2, "g_loss": 1}
    assert [u.shape for u in ups] == [p.shape for p in params]
    # f = x_i -> mean_b x_bi for every output j
    assert torch.allclose(ups[0], cache.inputs[0].mean(0, keepdim=True).T.expand(4, 5))


def test_sum_aggregation_reaches_the_previous_layer():
    params, cache, node = _problem(sizes=(2, 3, 4), B=5)
    seen = {}

    class Spy(Counting):
        def g_act(self, kind, rows):
            seen["msg"] = rows[:, :-1].clone()
            return super().g_act(kind, rows)

    dense_backward(Spy(), params, cache, node, "relu", "mse")
    # g_lin returns ones for every (b, i, j): the message into hidden unit i is n_out = 4
    assert torch.equal(seen["msg"], torch.full((5 * 3, 2), 4.0, dtype=torch.float64))


def test_bias_row_message_is_dropped():
    """Without batch-norm, the bias row's weights cannot influence the messages."""
    spec = LearnerSpec(2, 6, ("relu",), "mse", False, False, 1e-3)
    learners = NeuralLearners(init_theta(spec, torch.Generator().manual_seed(1), torch.float64), spec)
    params, cache, node = _problem()
    base = dense_backward(learners, params, cache, node, "relu", "mse")
    moved = [p.clone() for p in params]
    moved[2][-1] += 10.0        # bias row of the last layer (cache kept: only messages see it)
    other = dense_backward(learners, moved, cache, node, "relu", "mse")
    assert torch.allclose(base[0], other[0]) and torch.allclose(base[1], other[1])
    moved[2][0] += 10.0         # a weight row does change the messages
    assert not torch.allclose(base[1], dense_backward(learners, moved, cache, node, "relu", "mse")[1])


def test_loss_rows():
    params, cache, node = _problem(loss="xent", sizes=(3, 4, 3))
    full, short = loss_rows(node, "full"), loss_rows(node, "prediction_target")
    assert full.shape == (6 * 3, 3) and short.shape == (6 * 3, 2)
    assert torch.equal(full[:, 1:], short)
    assert torch.allclose(full[:, 0].reshape(6, 3).sum(-1).mean(), node.value)


def test_update_is_clamped():
    w = [torch.zeros(2, 2)]
    out = apply_updates(w, [torch.tensor([[100.0, -100.0], [1.0, -1.0]])], 0.1)
    assert torch.equal(out[0], torch.tensor([[-1.0, 1.0], [-0.1, 0.1]]))


def test_neural_backward_is_differentiable_in_theta():
    spec = LearnerSpec(3, 5, ("relu",), "mse", True, True, 0.01)
    theta = {k: v.requires_grad_(True) for k, v in init_theta(spec, torch.Generator().manual_seed(2), torch.float64).items()}
    params, cache, node = _problem()
    learners = NeuralLearners(theta, spec)
    new = apply_updates(params, dense_backward(learners, params, cache, node, "relu", "mse"), learners.lr)
    grads = torch.autograd.grad(sum(p.sum() for p in new), list(theta.values()), allow_unused=True)
    named = dict(zip(theta, grads))
    for name in ("f.w1", "g_lin.w1", "g_act.relu.w1", "g_loss.mse.w1", "lr"):
        assert named[name] is not None and named[name].abs().sum() > 0, name
