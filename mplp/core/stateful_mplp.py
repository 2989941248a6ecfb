"""The original, stateful MPLP of Randazzo et al. (2020, §3), behind the learned-optimizer interface.

Every node of the optimizee keeps a carry ``c`` of ``C = 2 (|m| + 1)`` numbers between inner
steps, updated by a GRU whose candidate goes through two MLPs of 80 and 40 ReLU units
(Randazzo Eq. 6-8).  Nodes: the loss node per output unit (input ``[loss element, prediction,
target]``), the activation nodes of each hidden layer (``[m, z]``), and the weight and bias nodes
of each layer (``[m, x_i, w_ij]`` and ``[m, b_j]``); no parameters are shared across layers.  A
node's first ``|m|`` carries are its outgoing message, a weight or bias node's next one its
update (Randazzo: "some of the carry states as output messages, and weight update").  Batches:
every sample runs the GRU from the node's carry, the update is the batch mean (Eq. 4), the new
carry the batch mean of the samples' carries, and the message into an input the mean over the
weights it feeds (Eq. 5; the thesis sums).  Never a gradient: the backward sees only messages.

Normalisation (Randazzo §3, "Normalization"): every GRU's inputs are standardised with a mean
and std recorded on the first minibatch of the calibration problems (``calibrate``), fixed
afterwards; each layer's update has the calibration mean removed and is scaled by ``scale``,
initially 0.2 times the std of the layer's initial weights and meta-trained.  The recorded
constants live in ``theta`` (``<node>.in_mean``, ``.in_std``, ``.out_mean``) and are read
detached, so the outer Adam never moves them.  Carries are not standardised (the GRU keeps
them in ``(-1, 1)``).  The hint loss (Randazzo Eq. 12) is ``meta.hint_weight`` times the sum
over the unroll of each step's loss on its own batch after its update.

Read where the paper is open: the weight nodes of a neuron receive the message that reaches the
neuron (as in the thesis' graph); the bias node's own message goes nowhere (Randazzo's text can
also be read as routing it through the bias node first).  The loss node always sees
``[loss element, prediction, target]``, whatever ``learner.loss_inputs`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mplp.core.backward import loss_features
from mplp.core.batch_entropy import batch_entropy
from mplp.core.config import MetaConfig, OptimizeeConfig
from mplp.core.learned_optimizer import LearnedOptimizer
from mplp.core.learners import uniform
from mplp.core.optimizee import forward, loss_node, loss_value
from mplp.core.unroll import Rollout, UnrollResult, roll, truncation

STD_FLOOR = 1e-3   # a constant input (a one-hot target's column) is centred, not blown up


def _vec(t: torch.Tensor) -> torch.Tensor:
    """A vector meta-parameter ``(*lead, n)`` shaped to meet rows ``(*lead, N, n)``: with population
    dimensions it gets a row axis."""
    return t if t.dim() == 1 else t.unsqueeze(-2)


def _lead(t: torch.Tensor, dim: int) -> torch.Tensor:
    """A per-member scalar ``(*lead)`` with trailing axes to broadcast against ``dim`` dimensions."""
    return t.reshape(*t.shape, *[1] * (dim - t.dim()))


@dataclass(frozen=True)
class StatefulMPLP(LearnedOptimizer):
    """Randazzo et al.'s MPLP with GRU carries; ``hidden`` is the first MLP layer (80), the second has half."""

    optimizee: OptimizeeConfig
    message_size: int = 8
    hidden: int = 80
    output_scale: float = 0.2
    be_formula: str = "code"
    name = "stateful-mplp"

    @property
    def carry(self) -> int:
        return 2 * (self.message_size + 1)

    def nodes(self) -> dict[str, int]:
        """Every node kind's GRU and the size of its input."""
        m, L = self.message_size, len(self.optimizee.sizes) - 1
        out = {"loss": 3}
        for l in range(L):
            out[f"w{l}"], out[f"b{l}"] = m + 2, m + 1
            if l < L - 1:
                out[f"act{l}"] = m + 1
        return out

    def init_theta(self, gen, dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
        """``torch.nn.Linear``-style weights for every GRU; identity standardisation until ``calibrate``."""
        C, H, theta = self.carry, self.hidden, {}
        draw = lambda fan_in, *shape: uniform(shape, fan_in, gen, dtype, device)
        for name, d in self.nodes().items():
            for gate in ("u", "r"):
                theta.update({f"{name}.W_{gate}x": draw(d + C, d, C), f"{name}.W_{gate}c": draw(d + C, C, C),
                              f"{name}.b_{gate}": draw(d + C, C)})
            for mlp, n_in in (("mx", d), ("mc", C)):
                for k, (a, b) in enumerate(((n_in, H), (H, H // 2), (H // 2, C)), 1):
                    theta.update({f"{name}.{mlp}.w{k}": draw(a, a, b), f"{name}.{mlp}.b{k}": draw(a, b)})
            theta[f"{name}.b_n"] = torch.zeros(C, dtype=dtype, device=device)
            theta[f"{name}.in_mean"] = torch.zeros(d, dtype=dtype, device=device)
            theta[f"{name}.in_std"] = torch.ones(d, dtype=dtype, device=device)
        for l, n_in in enumerate(self.optimizee.sizes[:-1]):
            theta[f"w{l}.out_mean"] = theta[f"b{l}.out_mean"] = torch.zeros((), dtype=dtype, device=device)
            theta[f"scale{l}"] = torch.tensor(self.output_scale / (3 * n_in) ** 0.5, dtype=dtype, device=device)
        return theta

    def init_state(self, params):
        lead, C, sizes = params[0].shape[:-2], self.carry, self.optimizee.sizes
        zeros = lambda *shape: params[0].new_zeros((*lead, *shape, C))
        carries = [zeros(sizes[-1])] + [zeros(n) for n in sizes[1:-1]]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            carries += [zeros(n_in, n_out), zeros(n_out)]
        return list(params) + carries

    # -- one inner step ---------------------------------------------------------------
    def _gru(self, theta, name, rows, c, lead, record):
        """The GRU of node kind ``name`` on ``rows (*lead, ..., d)`` from carries ``c`` (broadcast
        to the rows): the new carries ``(*lead, ..., C)``.  ``record``: a dict to note the
        standardisation of these rows in (calibration)."""
        shape, d = rows.shape[:-1], rows.shape[-1]
        x = rows.reshape(*lead, -1, d)
        c = c.expand(*shape, self.carry).reshape(*lead, -1, self.carry)
        if record is not None:
            flat = x.detach().reshape(-1, d)
            std = flat.std(0) if len(flat) > 1 else torch.ones_like(flat[0])     # one row: no spread to read
            record[f"{name}.in_mean"], record[f"{name}.in_std"] = flat.mean(0), std.clamp_min(STD_FLOOR)
            mean, std = record[f"{name}.in_mean"], record[f"{name}.in_std"]
        else:
            mean, std = theta[f"{name}.in_mean"].detach(), theta[f"{name}.in_std"].detach()
        x = (x - _vec(mean)) / _vec(std)
        p = lambda key: theta[f"{name}.{key}"]
        u = torch.sigmoid(x @ p("W_ux") + c @ p("W_uc") + _vec(p("b_u")))
        r = torch.sigmoid(x @ p("W_rx") + c @ p("W_rc") + _vec(p("b_r")))
        new = torch.tanh(self._mlp(theta, f"{name}.mx", x) + self._mlp(theta, f"{name}.mc", c * r) + _vec(p("b_n")))
        return (u * c + (1 - u) * new).reshape(*shape, self.carry)

    @staticmethod
    def _mlp(theta, name, x):
        """Linear(80), ReLU, Linear(40), ReLU, Linear(C) on rows ``x (*lead, N, in)``."""
        p = lambda key: theta[f"{name}.{key}"]
        h = torch.relu(x @ p("w1") + _vec(p("b1")))
        h = torch.relu(h @ p("w2") + _vec(p("b2")))
        return h @ p("w3") + _vec(p("b3"))

    def _update(self, theta, name, c, layer, nlead, record):
        """A weight or bias node's update from its samples' carries ``c (*lead, B, ..., C)``: batch mean (Eq. 4)."""
        raw = c[..., self.message_size]
        if record is not None and f"{name}.out_mean" not in record:
            record[f"{name}.out_mean"] = raw.detach().mean()
        mean = record[f"{name}.out_mean"] if record is not None else theta[f"{name}.out_mean"].detach()
        scale, mean = theta[f"scale{layer}"], _lead(mean, raw.dim())
        return (_lead(scale, raw.dim()) * (raw - mean)).mean(nlead)

    def step(self, theta, state, x, y, update: bool = True, record: dict | None = None):
        """One forward and message-passing backward: ``(loss (*lead), new state, entropy (n_hidden, *lead))``."""
        opt, m, L = self.optimizee, self.message_size, len(self.optimizee.sizes) - 1
        params, carries = state[:L], state[L:]
        lead = params[0].shape[:-2]
        cache = forward(params, x, opt.activation)
        node = loss_node(opt.loss, cache.output, y)
        H = (torch.stack([batch_entropy(h, self.be_formula) for h in cache.acts]) if cache.acts and x.shape[-2] > 1
             else node.value.new_full((len(cache.acts),) + tuple(node.value.shape), float("nan")))
        if not update:
            return node.value, state, H
        mean_b = lambda c: c.mean(len(lead))
        c = self._gru(theta, "loss", loss_features(node, "full"), carries[0].unsqueeze(-3), lead, record)
        new_loss, msg = mean_b(c), c[..., :m]                                      # (*lead, B, n_out, m)
        new_act, new_layers, new_params = [None] * (L - 1), [None] * (2 * L), [None] * L
        for l in reversed(range(L)):
            if l < L - 1:
                rows = torch.cat([msg, cache.preacts[l].unsqueeze(-1)], -1)
                c = self._gru(theta, f"act{l}", rows, carries[1 + l].unsqueeze(-3), lead, record)
                new_act[l], msg = mean_b(c), c[..., :m]
            w, xin = params[l][..., :-1, :], cache.inputs[l][..., :-1]             # (*lead, n_in, n_out), (*lead, B, n_in)
            B, (n_in, n_out) = x.shape[-2], w.shape[-2:]
            rows = torch.cat([msg.unsqueeze(-3).expand(*lead, B, n_in, n_out, m),
                              xin[..., None, None].expand(*lead, B, n_in, n_out, 1),
                              w.unsqueeze(-3)[..., None].expand(*lead, B, n_in, n_out, 1)], -1)
            cw = self._gru(theta, f"w{l}", rows, carries[L + 2 * l].unsqueeze(-4), lead, record)
            rows_b = torch.cat([msg, params[l][..., -1:, :].unsqueeze(-1).expand(*lead, B, n_out, 1)], -1)
            cb = self._gru(theta, f"b{l}", rows_b, carries[L + 2 * l + 1].unsqueeze(-3), lead, record)
            new_layers[2 * l], new_layers[2 * l + 1] = mean_b(cw), mean_b(cb)
            delta = torch.cat([self._update(theta, f"w{l}", cw, l, len(lead), record),
                               self._update(theta, f"b{l}", cb, l, len(lead), record).unsqueeze(-2)], -2)
            new_params[l] = params[l] + delta
            msg = cw[..., :m].mean(-2)                                              # Eq. 5: (*lead, B, n_in, m)
        return node.value, new_params + [new_loss] + new_act + new_layers, H

    # -- the interface ------------------------------------------------------------------
    def calibrate(self, theta, params, x, y) -> dict[str, torch.Tensor]:
        """Record the standardisation of every GRU's inputs and every update's mean on the first
        minibatch ``x (*lead, B, n_in)`` of fresh optimizees ``params`` (Randazzo §3; on MNIST the
        data stream's first batch for every optimizee), and set
        each layer's ``scale`` to ``output_scale`` times the std of its initial weights."""
        record: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            self.step(theta, self.init_state(params), x, y, True, record)
        theta = dict(theta, **{k: v.to(theta[k].dtype) for k, v in record.items()})
        for l, w in enumerate(params):
            theta[f"scale{l}"] = (self.output_scale * w[..., :-1, :].std()).to(theta[f"scale{l}"].dtype)
        return theta

    def unroll(self, theta, params, xs, ys, meta: MetaConfig, be_weight=None) -> UnrollResult:
        hints = []

        def step(state, x, y, update):
            loss, state, H = self.step(theta, state, x, y, update)
            if update and meta.hint_weight:
                L = len(self.optimizee.sizes) - 1
                hints.append(loss_value(self.optimizee.loss, state[:L], x, y, self.optimizee.activation))
            return loss, state, H

        total, *rest = truncation(step, params, xs, ys, meta, be_weight)
        if hints:
            total = total + meta.hint_weight * torch.stack(hints).sum(0)
        return UnrollResult(total, *rest)

    def rollout(self, theta, params, xs, ys) -> Rollout:
        theta = {k: v.detach() for k, v in theta.items()}
        return roll(lambda s, x, y, upd: self.step(theta, s, x, y, upd), [s.detach() for s in params], xs, ys)
