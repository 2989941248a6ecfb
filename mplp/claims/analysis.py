"""Reading a learned |m| = 1 optimizer (thesis §5.1, Figs. 3-7, Appendix D, Figs. 12-13).

With message size 1 (and no batch-norm) every learner is a function of two scalars, so
it can be drawn as a surface and compared with the SGD function of Table 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mplp.core import config as C
from mplp.core.backward import dense_backward
from mplp.core.learners import NeuralLearners, mlp_apply
from mplp.core.optimizee import init_params
from mplp.core.functions import FUNCTIONS, grid
from mplp.store import RunResult
from mplp.tasks.families import make_family
from mplp.core.unroll import inner_step

# learner name in theta for each plotted function of the ReLU / MSE optimizee
THETA_NAMES = {"f": "f", "g_lin": "g_lin", "g_loss": "g_loss.mse", "g_relu": "g_act.relu"}


@dataclass
class Checkpoint:
    """The meta-parameters chosen for analysis and why: the stored snapshot with the
    lowest validation outer-loss (``rule`` says so in words)."""

    step: int
    val_loss: float
    theta: dict[str, torch.Tensor]
    rule: str


def choose_checkpoint(run: RunResult, window: tuple[int, int] | None = None) -> Checkpoint:
    """Among the outer steps with a stored snapshot (within ``window`` = [lo, hi] when given:
    the thesis' §5.1 picks a state between 100,000 and 130,000 steps), the one with the
    lowest validation loss."""
    snaps = run.snapshots()
    v = run.validation
    loss_at = {int(s): float(l) for s, l in zip(v["step"], v["val_loss"]) if np.isfinite(l)}
    candidates = [s for s in snaps if s in loss_at and (window is None or window[0] <= s <= window[1])]
    if not candidates:
        where = "" if window is None else f" in steps {window[0]:,}-{window[1]:,}"
        raise ValueError(f"{run.path}: no snapshot{where} has a finite validation loss")
    best = min(candidates, key=lambda s: loss_at[s])
    within = "" if window is None else f" between steps {window[0]:,} and {window[1]:,}"
    return Checkpoint(best, loss_at[best], snaps[best],
                      f"the stored snapshot (every snapshot_every outer steps){within} with the lowest validation outer-loss")


def learned_function(theta: dict[str, torch.Tensor], name: str, spec_batch_norm: bool = False):
    """A learned |m| = 1 function as ``fn(a, b)`` (same convention as ``plotting.sgd_function``).

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
def record_input_ranges(cfg: C.ExperimentConfig, theta: dict[str, torch.Tensor], n_tasks: int = 20,
                        seed: int = 2024, per_call: int = 512, max_samples: int = 20000,
                        record_every: int = 5) -> InputRanges:
    """Inner-train ``n_tasks`` fresh tasks for T steps with ``theta`` and take the 1st/99th
    percentiles of every learner's inputs.  Every ``record_every``-th step runs the dense
    backward with a recorder (every input row explicit; ``per_call`` rows sampled per call),
    the steps between run the fast path; ``max_samples`` rows are kept per learner."""
    from mplp.core.fast import fast_backward

    from mplp.core.learners import learner_spec

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
def fit_example(cfg: C.ExperimentConfig, theta: dict[str, torch.Tensor], seed: int = 7, n: int = 200) -> FitExample:
    """Inner-train one fresh sinewave task for T steps with ``theta``."""
    from mplp.core.optimizee import forward
    from mplp.core.learners import learner_spec
    from mplp.core.unroll import rollout

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


def initial_level(losses: np.ndarray, n: int = 3, outlier: float = 2.0) -> float:
    """The loss a run starts its flat phase at: the step-0 validation, unless it is more
    than ``outlier`` times the median of the next ``n`` validations (the untrained
    optimizer diverged there: a start far above the plateau), in which case that median."""
    if len(losses) < 1 + n:
        return float(losses[0])
    after = float(np.median(losses[1:1 + n]))
    return float(losses[0]) if losses[0] <= outlier * after else after


def plateau_end(steps: np.ndarray, losses: np.ndarray, drop: float = 0.1) -> int | None:
    """First validation step from which the loss stays below ``(1 - drop)`` times its
    initial level (``initial_level``) for all later validations (the end of the initial
    flat phase), or None."""
    below = losses < (1 - drop) * initial_level(losses)
    for i in range(len(steps)):
        if below[i:].all():
            return int(steps[i])
    return None


def plateau_exit(steps: np.ndarray, losses: np.ndarray, window: int, drop: float = 0.1) -> int | None:
    """The pre-registered end of the flat phase: the first validation step ``s`` whose loss is
    below ``(1 - drop)`` times the run's ``initial_level`` and where the median of the
    validations in [s, s + window] is below that line too (a crossing that holds; a later
    divergence spike does not move it, a lone dip on the plateau does not make it).  Steps
    closer than ``window`` to the run's last validation are not judged (None: no exit yet)."""
    steps, losses = np.asarray(steps), np.asarray(losses, dtype=float)
    line = (1 - drop) * initial_level(losses)
    for i in np.flatnonzero(losses < line):
        s = steps[i]
        if s + window > steps[-1]:
            return None
        held = losses[(steps >= s) & (steps <= s + window)]
        if np.median(held) < line:
            return int(s)
    return None


def _worst(losses) -> np.ndarray:
    """Validation losses with NaN (a diverged validation) as +inf: the worst value, ranked last."""
    a = np.asarray(losses, dtype=float)
    return np.where(np.isnan(a), np.inf, a)


def final_level(steps: np.ndarray, losses: np.ndarray, S: int, tail: float = 0.1) -> float:
    """The pre-registered final loss of a run of ``S`` outer steps: the median of its
    validation losses after step ``(1 - tail) S`` (robust to a spike, no checkpoint chosen)."""
    steps, losses = np.asarray(steps), _worst(losses)
    late = losses[steps > (1 - tail) * S]
    if not len(late):
        raise ValueError(f"no validation after step {(1 - tail) * S:,.0f}: the run has not reached the "
                         f"last {tail:.0%} of its {S:,} steps")
    return float(np.median(late))


def log_mean_loss(losses: np.ndarray) -> float:
    """How fast meta-training brings the loss down: the mean log validation loss over the run
    (the log of the curve's geometric mean; lower is faster; a non-finite loss makes it inf)."""
    return float(np.mean(np.log(_worst(losses))))


def spike_fraction(losses: np.ndarray, factor: float = 2.0) -> float:
    """Meta-training instability: the fraction of validations (after the first) whose loss is
    more than ``factor`` times the lowest loss of the validations before it (NaN counts as a spike)."""
    losses = _worst(losses)
    if len(losses) < 2:
        return 0.0
    best = np.minimum.accumulate(losses)[:-1]
    return float(np.mean(losses[1:] > factor * best))


def rises_at(steps: np.ndarray, values: np.ndarray, at: int | None, window: int) -> bool | None:
    """Whether ``values`` (e.g. the last hidden layer's batch entropy per validation) are higher
    on average in the ``window`` outer steps after step ``at`` than in the ``window`` before it
    (None: no ``at``, or either side without a value)."""
    if at is None:
        return None
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    before = values[(steps >= at - window) & (steps < at)]
    after = values[(steps > at) & (steps <= at + window)]
    if not len(before) or not len(after):
        return None
    return bool(after.mean() > before.mean())


def tail_fraction(values: np.ndarray, tail: float = 0.1) -> float:
    """The mean of the last ``tail`` of a logged series relative to its first value (Fig. 10b:
    how far the batch-entropy term fell)."""
    v = np.asarray(values, dtype=float)
    n = max(1, int(round(tail * len(v))))
    return float(v[-n:].mean() / v[0])


@dataclass
class Crossings:
    """Where a run first went below its plateau line (90 % of ``initial_level``; None: never)
    and the validations after that back above it: how many, and the highest (evidence beside
    ``plateau_end``, which moves with each return)."""

    first_below: int | None
    n_back: int
    max_back: float | None


def crossings(steps: np.ndarray, losses: np.ndarray, drop: float = 0.1) -> Crossings:
    line = (1 - drop) * initial_level(losses)
    below = np.flatnonzero(losses < line)
    if not len(below):
        return Crossings(None, 0, None)
    back = losses[(steps > steps[below[0]]) & (losses >= line)]
    return Crossings(int(steps[below[0]]), len(back), float(back.max()) if len(back) else None)


@dataclass
class Continuation:
    """How longer runs got their length: continued at outer step ``step`` from finished
    shorter runs, when ``n_left`` of the ``n`` runs counted had left the plateau (what was
    known when the choice to continue them was made)."""

    step: int
    n_left: int
    n: int

    def note(self, what: str = "") -> str:
        """The post-hoc note of a verdict judged on the continued runs."""
        return (f"the runs continued past {self.step:,} steps after they were seen there ({self.n_left} of {self.n}"
                f"{' ' + what if what else ''} off the plateau)")


def continuation(runs: list[RunResult], counted: list[RunResult] | None = None,
                 drop: float = 0.1) -> Continuation | None:
    """``Continuation`` of ``runs`` (None unless every one continued a shorter run; the last
    continuation counts), with the plateau exits by then among ``counted`` (default: ``runs``)."""
    ext = [r.extended_at for r in runs]
    if not ext or not all(ext):
        return None
    step = max(e[-1][0] for e in ext)
    counted = runs if counted is None else counted
    left = sum(plateau_end(v["step"][v["step"] <= step], v["val_loss"][v["step"] <= step], drop) is not None
               for v in (r.validation for r in counted))
    return Continuation(step, left, len(counted))


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
class InnerComparison:
    """Fig. 11: R inner problems trained by the learned optimizer and by tuned baselines.

    loss / accuracy: ``{optimizer: (R, steps)}`` inner loss and batch accuracy before
    each update (accuracy empty for regression); lrs: the baselines' learning rates;
    T: the horizon the learned optimizer was meta-trained for.
    """

    loss: dict[str, np.ndarray]
    accuracy: dict[str, np.ndarray]
    lrs: dict[str, float]
    T: int


@torch.no_grad()
def compare_inner_training(cfg: C.ExperimentConfig, theta: dict[str, torch.Tensor], lrs: dict[str, float],
                           n_inits: int = 20, steps: int | None = None, seed: int = 99) -> InnerComparison:
    """Train ``n_inits`` fresh inits on the first ``steps`` (default 3T) batches of the
    validation split with the learned MPLP (``theta``) and with each baseline at its lr
    (``{"adam": lr, ...}``); every optimizer sees the same inits and batches."""
    from mplp.meta.baselines import inner_train
    from mplp.core.fast import fast_backward
    from mplp.core.optimizee import accuracy
    from mplp.core.learners import learner_spec

    steps = 3 * cfg.meta.T if steps is None else steps
    if steps < 1 or n_inits < 1:
        raise ValueError(f"steps and n_inits must be >= 1 (got steps={steps}, n_inits={n_inits})")
    gen = torch.Generator().manual_seed(seed)
    family = make_family(cfg.task)
    task = family.validation_tasks(1, gen, steps)[0]                 # raises if the split is too short
    xs, ys = task.batches(0, steps)                                   # (steps, B, ...)
    inits = [init_params(cfg.optimizee.sizes, gen) for _ in range(n_inits)]
    stacked = [torch.stack(ps) for ps in zip(*inits)]                 # (R, n_in + 1, n_out)
    rep = lambda t: t.unsqueeze(0).expand(n_inits, *t.shape)
    learners = NeuralLearners(theta, learner_spec(cfg))
    params, loss, acc = stacked, [], []
    for x, y in zip(xs, ys):
        st = inner_step(learners, params, rep(x), rep(y), cfg.optimizee, cfg.learner.loss_inputs, fast_backward)
        loss.append(st.loss)
        if cfg.optimizee.loss == "xent":
            acc.append(accuracy(st.output, rep(y)))
        params = st.params
    out_loss = {"mplp": torch.stack(loss, 1).double().numpy()}
    out_acc = {"mplp": torch.stack(acc, 1).double().numpy()} if acc else {}
    bx = xs.unsqueeze(0).expand(n_inits, *xs.shape)
    by = ys.unsqueeze(0).expand(n_inits, *ys.shape)
    for name, lr in lrs.items():
        run = inner_train(name, lr, stacked, bx, by, cfg.optimizee)
        out_loss[name] = run.curves.double().numpy()
        if run.accuracy is not None:
            out_acc[name] = run.accuracy.double().numpy()
    return InnerComparison(out_loss, out_acc, dict(lrs), cfg.meta.T)


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
    from mplp.core.learners import init_theta
    from mplp.core.functions import sgd_function

    def corr(theta):
        return [agreement(learned_function(theta, n), sgd_function(n), *ranges.ranges[n]) for n in FUNCTIONS]

    steps = sorted(snapshots)
    c = np.array([corr(snapshots[s]) for s in steps])                       # (n, 4)
    null = np.array([corr(init_theta(spec, torch.Generator().manual_seed(seed + i), torch.float64))
                     for i in range(n_null)])
    return AgreementTrajectory(np.asarray(steps), {n: c[:, i] for i, n in enumerate(FUNCTIONS)},
                               np.prod(np.sign(c), 1), {n: null[:, i] for i, n in enumerate(FUNCTIONS)})
