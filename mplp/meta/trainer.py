"""The meta-trainer: truncated BPTT over inner problems (thesis Algorithm 1).

Each outer step unrolls K inner steps from the carried (detached) inner state, takes
the gradient of the unroll's objective w.r.t. theta and applies one outer Adam step.
A new inner problem (task and optimizee init) is drawn when ``t + K > T`` (released
code; ``meta.unroll = "text"`` uses Algorithm 1's ``t + K >= T``).  The whole state
(theta, Adam moments, inner state, RNG states, history) is ``state_dict``, which the
training loop (``meta.loop``) checkpoints; a resumed run gives bit-for-bit the result of an
uninterrupted one on CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from mplp.core.config import ExperimentConfig, MetaConfig
from mplp.store import DamagedResultError, StoreError
from mplp.core.backward import dense_backward, sgd_backward
from mplp.core.fast import engine, fast_backward
from mplp.core import optimizers
from mplp.core.learned_optimizer import LearnedOptimizer
from mplp.core.optimizee import init_params
from mplp.core.unroll import UnrollResult, outer_metric
from mplp.meta.estimators import from_meta
from mplp.meta.outer import AdamState, adam_init, adam_update, meta_gradient
from mplp.tasks.families import BatchTask, ValidationSet, make_family, validation_set


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass
class InnerState:
    """The carried inner problem: optimizee params, its step t, data cursor and task."""

    params: list[torch.Tensor]
    t: int
    cursor: int
    task: BatchTask


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped."""

    step: int
    theta: dict[str, torch.Tensor]
    adam: AdamState
    inner: InnerState | None
    gen_task: torch.Generator
    gen_init: torch.Generator
    train_rows: list[dict] = field(default_factory=list)
    val_rows: list[dict] = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)
    window: list = field(default_factory=list)
    skipped: int = 0
    elapsed: float = 0.0
    gen_es: torch.Generator | None = None     # perturbations of meta.estimator "es" / "pes" (always set)
    pes: dict | None = None                   # "pes": particle inner params and accumulated perturbations
    resumes: list = field(default_factory=list)   # one record per resume: step, dtype, backward


@dataclass
class Validation:
    """Validation of one theta: mean/std over runs of the outer metric, etc."""

    loss: float
    loss_std: float
    final_inner_loss: float
    entropy: list[float]       # per hidden layer, mean over runs and steps
    curves: torch.Tensor       # (R, T) inner-loss curves

    def row(self, step: int) -> dict:
        d = {"step": step, "val_loss": self.loss, "val_loss_std": self.loss_std,
             "final_inner_loss": self.final_inner_loss}
        d.update({f"entropy_l{k}": e for k, e in enumerate(self.entropy)})
        return d


@dataclass
class Truncation:
    """The next K batches ``xs, ys`` of the carried inner problem as an unrolled system for
    the estimators: the state is the optimizee's params; batched members (a population, ES
    perturbations) sit on a leading dimension of theta, params and batches.  ``last``: the
    latest unroll's full result (its losses and batch-entropy term, for the log)."""

    optimizer: LearnedOptimizer
    xs: torch.Tensor
    ys: torch.Tensor
    meta: MetaConfig
    last: UnrollResult | None = None

    def unroll(self, theta, params, K: int, be_weight=None):
        if K != len(self.xs):
            raise ValueError(f"a Truncation unrolls exactly its {len(self.xs)} batches, not K = {K}")
        self.last = self.optimizer.unroll(theta, params, self.xs, self.ys, self.meta, be_weight)
        return self.last.total, self.last.params

    def unroll_batch(self, thetas, params, K: int):
        M = next(iter(thetas.values())).shape[0]
        expand = lambda t: t.unsqueeze(1).expand(t.shape[0], M, *t.shape[1:])
        self.last = self.optimizer.unroll(thetas, params, expand(self.xs), expand(self.ys), self.meta)
        return self.last.total, self.last.params

    def repeat(self, params, M: int):
        return [p.expand(M, *p.shape) for p in params]

    def join(self, a, b):
        return [torch.cat([x, y]) for x, y in zip(a, b)]

    def take(self, params, index):
        return [w[index] for w in params]


class MetaTrainer:
    """Algorithm 1 for one experiment config: a learned optimizer (MPLP, with a pluggable
    backward) meta-trained by the gradient estimator ``meta.estimator`` names."""

    def __init__(self, cfg: ExperimentConfig, dtype=torch.float32, device="cpu",
                 backward=fast_backward):
        self.cfg, self.dtype, self.device = cfg, dtype, torch.device(device)
        self.optimizer = optimizers.from_config(cfg, backward)
        self.backward = getattr(self.optimizer, "backward", None)      # None: a gradient-fed optimizer
        self.estimator = from_meta(cfg.meta)
        self.family = make_family(cfg.task, dtype, self.device)
        self._val: ValidationSet | None = None

    # -- state -------------------------------------------------------------------------
    def init_state(self) -> TrainState:
        s = self.cfg.seed
        theta = self.optimizer.init_theta(_seeded(s), self.dtype, self.device)
        theta = self.optimizer.calibrate(theta, *self._calibration_batch(_seeded(s + 4_000_037)))
        return TrainState(0, theta, adam_init(theta), None, _seeded(s + 1_000_003), _seeded(s + 2_000_029),
                          gen_es=_seeded(s + 3_000_017))

    def _calibration_batch(self, gen: torch.Generator, n: int = 4):
        """The first minibatch of ``n`` fresh inner problems and their optimizees, stacked on a
        leading dimension, drawn from ``gen`` alone (the training streams are untouched)."""
        firsts, inits = [], []
        for _ in range(n):
            firsts.append(self.family.sample(gen, self.cfg.meta.T).batches(0, 1))
            inits.append(init_params(self.cfg.optimizee.sizes, gen, self.dtype, self.device))
        params = [torch.stack(ps) for ps in zip(*inits)]
        return params, torch.stack([x[0] for x, _ in firsts]), torch.stack([y[0] for _, y in firsts])

    def _needs_reset(self, inner: InnerState | None) -> bool:
        if inner is None:
            return True
        K, T = self.cfg.meta.K, self.cfg.meta.T
        return inner.t + K > T if self.cfg.meta.unroll == "code" else inner.t + K >= T

    def _reset(self, st: TrainState) -> InnerState:
        task = self.family.sample(st.gen_task, self.cfg.meta.T)
        params = self.optimizer.init_state(init_params(self.cfg.optimizee.sizes, st.gen_init, self.dtype, self.device))
        cursor = st.inner.cursor if (st.inner is not None and self.family.continue_cursor) else 0
        return InnerState(params, 0, cursor, task)

    # -- one outer step ----------------------------------------------------------------
    def next_batches(self, st: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
        """The K batches of the next unroll, drawing a new inner problem first if due."""
        if self._needs_reset(st.inner):
            st.inner = self._reset(st)
        return st.inner.task.batches(st.inner.cursor, self.cfg.meta.K)

    def outer_step(self, st: TrainState) -> dict:
        """Advance ``st`` by one outer step in place; returns that step's losses.  The ES
        family's perturbed unrolls and the unperturbed one (which carries the inner state
        on) run as one batched no-grad program; PES' particles restart with every new inner
        problem (Vicol et al. 2021), which removes the truncation bias."""
        xs, ys = self.next_batches(st)
        system = Truncation(self.optimizer, xs, ys, self.cfg.meta)
        est = self.estimator.estimate(system, st.theta, st.inner.params, self.cfg.meta.K, st.gen_es,
                                      st.pes if st.inner.t > 0 else None)
        st.pes = est.memory
        self.advance(st, est.grad, est.state)
        res, i = system.last, est.centre
        value = lambda t: float(t.detach().expand_as(res.total)[i] if i is not None else t.detach())
        return {"outer_loss": value(res.total), "inner_loss": value(res.outer), "be_term": value(res.be_term)}

    def advance(self, st: TrainState, grads: dict[str, torch.Tensor], params: list[torch.Tensor]) -> None:
        """Apply the outer Adam step (skipped and counted when the meta-gradient is not
        finite: a diverged inner problem) and carry the detached inner state on by K."""
        if all(bool(torch.isfinite(g).all()) for g in grads.values()):
            st.theta, st.adam = adam_update(st.theta, grads, st.adam, self.cfg.meta)
        else:
            st.skipped += 1
        st.inner.params = [p.detach() for p in params]
        st.inner.t += self.cfg.meta.K
        st.inner.cursor += self.cfg.meta.K
        st.step += 1

    # -- validation ----------------------------------------------------------------------
    @property
    def validation_set(self) -> ValidationSet:
        if self._val is None:
            self._val = validation_set(self.cfg, self.dtype, self.device, self.family)
        return self._val

    def validate(self, theta: dict[str, torch.Tensor]) -> Validation:
        """Inner-train every validation run for T steps with ``theta`` (no meta-gradient).

        The fast backward takes all runs at once (a leading run dimension, batch-norm
        statistics per run); the dense reference goes run by run."""
        v = self.validation_set
        if self.backward in (fast_backward, sgd_backward, None):
            inits = self.optimizer.init_state([torch.stack(ps) for ps in zip(*v.inits)])   # (R, n_in + 1, n_out)
            r = self.optimizer.rollout(theta, inits, v.xs.transpose(0, 1), v.ys.transpose(0, 1))
            curves = r.losses.transpose(0, 1)                                # (R, T)
            ent = r.entropy.double().mean((0, 2))                            # (T, n_hidden, R) -> (n_hidden,)
        else:
            rs = [self.optimizer.rollout(theta, self.optimizer.init_state(init), xs, ys)
                  for xs, ys, init in zip(v.xs, v.ys, v.inits)]
            curves = torch.stack([r.losses for r in rs])
            ent = torch.stack([r.entropy for r in rs]).double().mean((0, 1))
        metric = outer_metric(curves, self.cfg.meta.unroll).double()
        return Validation(float(metric.mean()), float(metric.std()) if len(metric) > 1 else 0.0,
                          float(curves[:, -1].double().mean()), [float(e) for e in ent], curves)

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self, st: TrainState) -> dict:
        inner = None
        if st.inner is not None:
            # an inner problem due for a reset is redrawn at the next step: only its cursor is kept
            # (an L2L's carries on MNIST alone are 8 MB)
            spent = self._needs_reset(st.inner)
            inner = {"params": [] if spent else st.inner.params, "t": st.inner.t, "cursor": st.inner.cursor,
                     "task": None if self.family.continue_cursor or spent else
                     {"x": st.inner.task.x, "y": st.inner.task.y}}
        return {"config_hash": self.cfg.hash(), "step": st.step, "theta": st.theta,
                "adam": st.adam.state_dict(), "inner": inner,
                "gen_task": st.gen_task.get_state(), "gen_init": st.gen_init.get_state(),
                "train_rows": st.train_rows, "val_rows": st.val_rows, "snapshots": st.snapshots,
                "window": st.window, "skipped": st.skipped, "elapsed": st.elapsed,
                "gen_es": st.gen_es.get_state(), "pes": st.pes, "resumes": st.resumes,
                "dtype": str(self.dtype).replace("torch.", ""), "backward": backward_name(self)}

    def load_state_dict(self, d: dict, config_hash: str | None = None) -> TrainState:
        """The state a checkpoint holds; it must belong to this config (or to ``config_hash``,
        the shorter run an extension starts from)."""
        if not isinstance(d, dict) or "config_hash" not in d:
            raise DamagedResultError("the checkpoint is not one this library wrote; train with --restart")
        if d["config_hash"] != (config_hash or self.cfg.hash()):
            raise DamagedResultError(f"checkpoint belongs to config {d['config_hash']}, not {self.cfg.hash()}")
        for what, have in (("dtype", str(self.dtype).replace("torch.", "")), ("backward", backward_name(self))):
            if d.get(what, have) != have:    # checkpoints written before these were recorded pass
                raise StoreError(f"the checkpoint was written with {what} {d[what]!r}, this run uses {have!r}: "
                                 "resuming would mix them; resume with the same --dtype / --backward / "
                                 "MPLP_COMPILE, or --restart")
        to = lambda t: t.to(self.device)
        inner = None
        if d["inner"] is not None:
            i = d["inner"]
            task = (self.family.sample(None, 0) if self.family.continue_cursor
                    else None if i["task"] is None       # spent: redrawn before it is used
                    else BatchTask(to(i["task"]["x"]), to(i["task"]["y"]), self.cfg.task.batch_size))
            inner = InnerState([to(p) for p in i["params"]], i["t"], i["cursor"], task)
        gt, gi = torch.Generator(), torch.Generator()
        gt.set_state(d["gen_task"])
        gi.set_state(d["gen_init"])
        adam = AdamState.from_state_dict(d["adam"])
        adam.m = {k: to(v) for k, v in adam.m.items()}
        adam.v = {k: to(v) for k, v in adam.v.items()}
        ge = _seeded(self.cfg.seed + 3_000_017)        # as in init_state; checkpoints written
        if d.get("gen_es") is not None:                 # before the estimators existed have none
            ge.set_state(d["gen_es"])
        pes = d.get("pes")
        if pes is not None:
            pes = {"params": [to(p) for p in pes["params"]], "xi": {k: to(v) for k, v in pes["xi"].items()}}
        return TrainState(d["step"], {k: to(v) for k, v in d["theta"].items()}, adam, inner, gt, gi,
                          d["train_rows"], d["val_rows"], d["snapshots"], d["window"], d["skipped"],
                          d["elapsed"], ge, pes, list(d.get("resumes", [])))


def backward_name(trainer: "MetaTrainer") -> str:
    """What computed a run: "dense" or "fast (<kernel backend>)" (recorded and checked on resume)."""
    if trainer.backward is None:
        return f"autograd ({trainer.optimizer.name})"
    if trainer.backward is sgd_backward:
        return "sgd (Table 2 in closed form)"
    return "dense" if trainer.backward is dense_backward else f"fast ({engine()})"


def resolve_device(device: str) -> torch.device:
    """``torch.device`` for "cpu" / "cuda[:n]", with a clear error when CUDA is absent."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; expected 'cpu' or 'cuda'")
    return dev


def _population_key(cfg: ExperimentConfig) -> dict:
    """What members of one population must share: everything that shapes the batched step."""
    d = cfg.to_dict()
    d["meta"].pop("batch_entropy")
    return {k: d[k] for k in ("optimizee", "learner", "task", "meta")}


def population_step(trainers: list[MetaTrainer], states: list[TrainState]) -> list[dict]:
    """One outer step of P runs as one batched program (fast path, leading dimension P).

    Every member keeps its own generators, task, inner state, theta and Adam state, so
    it follows the same trajectory as when run alone (up to floating-point rounding).
    Members may differ in ``seed`` and in ``meta.batch_entropy``.
    """
    t0 = trainers[0]
    meta = t0.cfg.meta
    batches = [tr.next_batches(st) for tr, st in zip(trainers, states)]
    xs = torch.stack([b[0] for b in batches], 1)                       # (K, P, B, ...)
    ys = torch.stack([b[1] for b in batches], 1)
    leaf = {k: torch.stack([st.theta[k] for st in states]).detach().requires_grad_(True) for k in states[0].theta}
    params = [torch.stack([st.inner.params[l] for st in states]) for l in range(len(states[0].inner.params))]
    be = [tr.cfg.meta.batch_entropy for tr in trainers]
    be_weight = None
    if any(be) and not all(be):
        be_weight = torch.tensor([float(b) for b in be], dtype=xs.dtype, device=xs.device)
    res = t0.optimizer.unroll(leaf, params, xs, ys, dataclasses.replace(meta, batch_entropy=any(be)), be_weight)
    grads = meta_gradient(res.total.sum(), leaf)
    be_term = res.be_term.detach().expand_as(res.total)
    out = []
    for p, (tr, st) in enumerate(zip(trainers, states)):
        tr.advance(st, {k: v[p] for k, v in grads.items()}, [w[p] for w in res.params])
        out.append({"outer_loss": float(res.total[p].detach()), "inner_loss": float(res.outer[p].detach()),
                    "be_term": float(be_term[p])})
    return out


