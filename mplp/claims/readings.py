"""Reading a learned |m| = 1 optimizer (thesis §5.1, Figs. 3-7, Appendix D, Figs. 12-13).

With message size 1 (and no batch-norm) every learner is a function of two scalars, so
it can be drawn as a surface and compared with the SGD function of Table 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mplp.core.config import ExperimentConfig
from mplp.core.backward import dense_backward
from mplp.core.fast import fast_backward
from mplp.core.functions import FUNCTIONS, grid, sgd_function
from mplp.core.learners import NeuralLearners, init_theta, learner_spec, mlp_apply
from mplp.core.optimizee import forward, init_params
from mplp.core.unroll import inner_step, rollout
from mplp.tasks.families import make_family


# learner name in theta for each plotted function of the ReLU / MSE optimizee
THETA_NAMES = {"f": "f", "g_lin": "g_lin", "g_loss": "g_loss.mse", "g_relu": "g_act.relu"}


def learned_function(theta: dict[str, torch.Tensor], name: str, spec_batch_norm: bool = False):
    """A learned |m| = 1 function as ``fn(a, b)`` (same convention as ``core.functions.sgd_function``).

    g_loss takes [prediction, target] (the §5.1 loss inputs).  With batch-norm a learner
    is not a pointwise function of its inputs, so it cannot be drawn this way.
    """
    if spec_batch_norm:
        raise ValueError("learners with batch-norm are not pointwise functions of their inputs")
    key = THETA_NAMES[name]
    n_in = theta[f"{key}.w1"].shape[0]
    if n_in != 2 or theta[f"{key}.w2"].shape[1] != 1:
        raise ValueError(f"{name}: expected a 2-input, 1-output learner (|m| = 1, loss inputs "
                         f"[prediction, target]); got {n_in} inputs")

    def fn(a, b):
        rows = torch.stack([a.reshape(-1), b.reshape(-1)], 1).to(theta[f"{key}.w1"].dtype)
        with torch.no_grad():
            return mlp_apply(theta, key, rows, False).reshape(a.shape).double()

    return fn


class _Recorder:
    """Learners that pass through to ``NeuralLearners`` and keep a sample of their input rows."""

    def __init__(self, inner: NeuralLearners, per_call: int, gen: torch.Generator):
        self.inner, self.per_call, self.gen = inner, per_call, gen
        self.rows: dict[str, list[torch.Tensor]] = {k: [] for k in FUNCTIONS}

    @property
    def lr(self):
        return self.inner.lr

    def _keep(self, name, rows):
        if rows.shape[0] > self.per_call:
            rows = rows[torch.randperm(rows.shape[0], generator=self.gen)[: self.per_call]]
        self.rows[name].append(rows.detach()[:, -2:].double())

    def f(self, rows):
        self._keep("f", rows)
        return self.inner.f(rows)

    def g_lin(self, rows):
        self._keep("g_lin", rows)
        return self.inner.g_lin(rows)

    def g_act(self, kind, rows):
        self._keep("g_relu", rows)
        return self.inner.g_act(kind, rows)

    def g_loss(self, kind, rows):
        self._keep("g_loss", rows)
        return self.inner.g_loss(kind, rows)


@dataclass
class InputRanges:
    """1st-99th percentile ranges of each learner's two inputs, recorded while the
    learned optimizer inner-trains fresh tasks (§5.1); ``samples`` keeps the rows."""

    ranges: dict[str, tuple[tuple[float, float], tuple[float, float]]]
    samples: dict[str, np.ndarray]
    n_tasks: int


@torch.no_grad()
def record_input_ranges(cfg: ExperimentConfig, theta: dict[str, torch.Tensor], n_tasks: int = 20,
                        seed: int = 2024, per_call: int = 512, max_samples: int = 20000,
                        record_every: int = 5) -> InputRanges:
    """Inner-train ``n_tasks`` fresh tasks for T steps with ``theta`` and take the 1st/99th
    percentiles of every learner's inputs.  Every ``record_every``-th step runs the dense
    backward with a recorder (every input row explicit; ``per_call`` rows sampled per call),
    the steps between run the fast path; ``max_samples`` rows are kept per learner."""


    spec = learner_spec(cfg)
    gen = torch.Generator().manual_seed(seed)
    family = make_family(cfg.task, torch.float64)
    plain = NeuralLearners({k: v.double() for k, v in theta.items()}, spec)
    rec = _Recorder(plain, per_call, gen)
    for _ in range(n_tasks):
        task = family.sample(gen, cfg.meta.T)
        params = init_params(cfg.optimizee.sizes, gen, torch.float64)
        xs, ys = task.batches(0, cfg.meta.T)
        for t, (x, y) in enumerate(zip(xs, ys)):
            learners, bw = (rec, dense_backward) if t % record_every == 0 else (plain, fast_backward)
            params = inner_step(learners, params, x, y, cfg.optimizee, cfg.learner.loss_inputs, bw).params
    ranges, samples = {}, {}
    for k, v in rec.rows.items():
        s = torch.cat(v)
        lo, hi = np.percentile(s.numpy(), 1, axis=0), np.percentile(s.numpy(), 99, axis=0)
        ranges[k] = ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
        if s.shape[0] > max_samples:
            s = s[torch.randperm(s.shape[0], generator=gen)[:max_samples]]
        samples[k] = s.numpy()
    return InputRanges(ranges, samples, n_tasks)


@dataclass
class FitExample:
    """Fig. 3b: a learned optimizer fitting a sinewave it never saw.

    x: ``(n,)`` grid; target: a sin(x + p); before / after: the network on the grid at
    initialisation and after T inner steps; losses: ``(T,)`` inner losses on the way.
    """

    amplitude: float
    phase: float
    x: np.ndarray
    target: np.ndarray
    before: np.ndarray
    after: np.ndarray
    losses: np.ndarray


@torch.no_grad()
def fit_example(cfg: ExperimentConfig, theta: dict[str, torch.Tensor], seed: int = 7, n: int = 200) -> FitExample:
    """Inner-train one fresh sinewave task for T steps with ``theta``."""

    gen = torch.Generator().manual_seed(seed)
    task = make_family(cfg.task, torch.float64).sample(gen, cfg.meta.T)
    params = init_params(cfg.optimizee.sizes, gen, torch.float64)
    xs, ys = task.batches(0, cfg.meta.T)
    learners = NeuralLearners({k: v.double() for k, v in theta.items()}, learner_spec(cfg))
    r = rollout(learners, params, xs, ys, cfg.optimizee, cfg.learner.loss_inputs, dense_backward)
    x = torch.linspace(*cfg.task.x_range, n, dtype=torch.float64)[:, None]
    out = lambda p: forward(p, x, cfg.optimizee.activation).output[:, 0].numpy()
    return FitExample(task.amplitude, task.phase, x[:, 0].numpy(), task.target(x)[:, 0].numpy(),
                      out(params), out(r.params), r.losses.numpy())


def agreement(fn_a, fn_b, a_range, b_range, n: int = 41) -> float:
    """Pearson correlation of two functions on an n x n grid over the rectangle
    (+1: same shape; -1: negated shape; nan if either is constant there)."""
    _, _, za = grid(fn_a, a_range, b_range, n)
    _, _, zb = grid(fn_b, a_range, b_range, n)
    za, zb = za.ravel() - za.mean(), zb.ravel() - zb.mean()
    den = np.sqrt((za ** 2).sum() * (zb ** 2).sum())
    return float((za * zb).sum() / den) if den > 0 else float("nan")


@dataclass
class ActivationReading:
    """Appendix D: the activation the learned g_relu is the derivative of.

    z: grid of pre-activations; derivative: median over messages |m| >= min_abs_m of
    g_relu(m, z) / m; antiderivative: its cumulative integral, shifted to 0 at z = 0;
    relu: ReLU on the same grid, for comparison.
    """

    z: np.ndarray
    derivative: np.ndarray
    antiderivative: np.ndarray
    relu: np.ndarray
    min_abs_m: float


def read_activation(g_relu, m_range, z_range, min_abs_m: float, n: int = 201) -> ActivationReading:
    """Divide g_relu by its message and integrate over z (thesis Figs. 12-13)."""
    m = torch.linspace(*m_range, n, dtype=torch.float64)
    m = m[m.abs() >= min_abs_m]
    if len(m) == 0:
        raise ValueError(f"no message in {m_range} has |m| >= {min_abs_m}")
    z = torch.linspace(*z_range, n, dtype=torch.float64)
    M, Z = torch.meshgrid(m, z, indexing="ij")
    ratio = (g_relu(M, Z) / M).numpy()
    d = np.median(ratio, axis=0)
    zz = z.numpy()
    anti = np.concatenate([[0.0], np.cumsum((d[1:] + d[:-1]) / 2 * np.diff(zz))])
    anti = anti - np.interp(0.0, zz, anti) if zz[0] <= 0 <= zz[-1] else anti
    return ActivationReading(zz, d, anti, np.maximum(zz, 0.0), min_abs_m)


@dataclass
class AgreementTrajectory:
    """Calibrated function agreement (§5.1, Figs. 4-7): the correlation of each learned function
    with its SGD surface (on the checkpoint's recorded input ranges) at every stored snapshot
    (``steps (n,)``, ``corr[name] (n,)``, ``sign_product (n,)``), and the same correlation
    for ``null[name] (n_null,)`` random learner initialisations: what chance gives."""

    steps: np.ndarray
    corr: dict[str, np.ndarray]
    sign_product: np.ndarray
    null: dict[str, np.ndarray]

    def null_quantile(self, name: str, q: float = 0.95) -> float:
        """The ``q`` quantile of |correlation| over the random initialisations."""
        return float(np.nanquantile(np.abs(self.null[name]), q))

    @property
    def null_sign_positive(self) -> float:
        """Fraction of random initialisations whose four signs multiply to +1."""
        s = np.prod(np.sign(np.stack([self.null[n] for n in self.null])), 0)
        return float(np.mean(s > 0))

    def settled_sign(self, values: np.ndarray) -> int | None:
        """First stored step from which ``values`` keep the sign of the last one (None: none)."""
        last = np.sign(values[-1])
        for i in range(len(values)):
            if (np.sign(values[i:]) == last).all():
                return int(self.steps[i])
        return None


def agreement_trajectory(snapshots: dict[int, dict[str, torch.Tensor]], ranges: InputRanges, spec,
                         n_null: int = 100, seed: int = 90_001) -> AgreementTrajectory:
    """Correlations with SGD's functions over ``snapshots`` {step: theta} and for ``n_null``
    thetas drawn by ``learners.init_theta`` (seeds ``seed .. seed + n_null - 1``)."""

    def corr(theta):
        return [agreement(learned_function(theta, n), sgd_function(n), *ranges.ranges[n]) for n in FUNCTIONS]

    steps = sorted(snapshots)
    c = np.array([corr(snapshots[s]) for s in steps])                       # (n, 4)
    null = np.array([corr(init_theta(spec, torch.Generator().manual_seed(seed + i), torch.float64))
                     for i in range(n_null)])
    return AgreementTrajectory(np.asarray(steps), {n: c[:, i] for i, n in enumerate(FUNCTIONS)},
                               np.prod(np.sign(c), 1), {n: null[:, i] for i, n in enumerate(FUNCTIONS)})
