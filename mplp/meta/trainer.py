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

from mplp.core.config import ExperimentConfig
from mplp.store import DamagedResultError, StoreError
from mplp.core.backward import dense_backward, sgd_backward
from mplp.core.fast import engine, fast_backward
from mplp.core.learners import init_theta, learner_spec, make_learners
from mplp.core.optimizee import init_params
from mplp.meta.outer import AdamState, adam_init, adam_update, meta_gradient
from mplp.tasks.families import BatchTask, ValidationSet, make_family, validation_set
from mplp.core.unroll import outer_metric, rollout, unroll


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


class MetaTrainer:
    """Algorithm 1 for one experiment config, with a pluggable backward."""

    def __init__(self, cfg: ExperimentConfig, dtype=torch.float32, device="cpu",
                 backward=fast_backward):
        self.cfg, self.dtype, self.device, self.backward = cfg, dtype, torch.device(device), backward
        self.spec = learner_spec(cfg)
        if self.spec.kind == "sgd":          # Table 2's functions: their closed form (== dense, tested)
            self.backward = sgd_backward
        self.family = make_family(cfg.task, dtype, self.device)
        self._val: ValidationSet | None = None

    # -- state -------------------------------------------------------------------------
    def init_state(self) -> TrainState:
        s = self.cfg.seed
        theta = init_theta(self.spec, _seeded(s), self.dtype, self.device)
        return TrainState(0, theta, adam_init(theta), None, _seeded(s + 1_000_003), _seeded(s + 2_000_029),
                          gen_es=_seeded(s + 3_000_017))

    def _needs_reset(self, inner: InnerState | None) -> bool:
        if inner is None:
            return True
        K, T = self.cfg.meta.K, self.cfg.meta.T
        return inner.t + K > T if self.cfg.meta.unroll == "code" else inner.t + K >= T

    def _reset(self, st: TrainState) -> InnerState:
        task = self.family.sample(st.gen_task, self.cfg.meta.T)
        params = init_params(self.cfg.optimizee.sizes, st.gen_init, self.dtype, self.device)
        cursor = st.inner.cursor if (st.inner is not None and self.family.continue_cursor) else 0
        return InnerState(params, 0, cursor, task)

    # -- one outer step ----------------------------------------------------------------
    def next_batches(self, st: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
        """The K batches of the next unroll, drawing a new inner problem first if due."""
        if self._needs_reset(st.inner):
            st.inner = self._reset(st)
        return st.inner.task.batches(st.inner.cursor, self.cfg.meta.K)

    def outer_step(self, st: TrainState) -> dict:
        """Advance ``st`` by one outer step in place; returns that step's losses."""
        if self.cfg.meta.estimator != "tbptt":
            return self._es_step(st)
        xs, ys = self.next_batches(st)
        leaf = {k: v.detach().requires_grad_(True) for k, v in st.theta.items()}
        res = unroll(make_learners(leaf, self.spec), st.inner.params, xs, ys, self.cfg.optimizee, self.cfg.meta,
                     self.cfg.learner.loss_inputs, self.backward)
        self.advance(st, meta_gradient(res.total, leaf), res.params)
        return {"outer_loss": float(res.total.detach()), "inner_loss": float(res.outer.detach()),
                "be_term": float(res.be_term.detach())}

    def _es_step(self, st: TrainState) -> dict:
        """One outer step with an evolution-strategies estimate of the meta-gradient
        (``meta.estimator`` "es" or "pes", antithetic, ``meta.es_pairs`` pairs, scale
        ``meta.es_sigma``).  All 2N perturbed unrolls and the unperturbed one (which carries
        the inner state on) run as one batched no-grad program.  "es" unrolls every pair
        from the carried inner state (ES over one truncation); "pes" keeps each particle's
        own inner state and the sum of its perturbations (Vicol et al. 2021), restarted
        with every new inner problem, which removes the truncation bias."""
        xs, ys = self.next_batches(st)
        grads, res = self.es_estimate(st, xs, ys)
        N = self.cfg.meta.es_pairs
        self.advance(st, grads, [w[2 * N] for w in res.params])
        L, be = res.total, res.be_term.expand_as(res.total)
        return {"outer_loss": float(L[2 * N]), "inner_loss": float(res.outer[2 * N]), "be_term": float(be[2 * N])}

    def es_estimate(self, st: TrainState, xs: torch.Tensor, ys: torch.Tensor):
        """The ES / PES meta-gradient for the unroll on ``xs, ys`` from ``st``'s inner state
        (updates only the generator and the PES particles).  Returns ``(grads, res)``,
        ``res`` the batched unroll: members ``:N`` at theta + e_i, ``N:2N`` at theta - e_i,
        the last at theta."""
        meta = self.cfg.meta
        N, sigma = meta.es_pairs, meta.es_sigma
        eps = {k: sigma * torch.randn((N,) + tuple(v.shape), generator=st.gen_es, dtype=v.dtype).to(v.device)
               for k, v in st.theta.items()}
        thetas = {k: torch.cat([v + eps[k], v - eps[k], v[None]]) for k, v in st.theta.items()}
        P = 2 * N + 1
        if meta.estimator == "pes":
            if st.pes is None or st.inner.t == 0:                  # a new inner problem: restart the particles
                st.pes = {"params": [p.expand(2 * N, *p.shape).clone() for p in st.inner.params],
                          "xi": {k: torch.zeros_like(e) for k, e in eps.items()}}
            params = [torch.cat([q, p[None]]) for q, p in zip(st.pes["params"], st.inner.params)]
        else:
            params = [p.expand(P, *p.shape) for p in st.inner.params]
        expand = lambda t: t.unsqueeze(1).expand(t.shape[0], P, *t.shape[1:])
        with torch.no_grad():
            res = unroll(make_learners(thetas, self.spec), params, expand(xs), expand(ys), self.cfg.optimizee,
                         meta, self.cfg.learner.loss_inputs, self.backward)
        L = res.total
        diff = (L[:N] - L[N:2 * N])                                     # (N,)
        shape = lambda e: diff.reshape((N,) + (1,) * (e.dim() - 1))
        if meta.estimator == "pes":
            st.pes["xi"] = {k: x + eps[k] for k, x in st.pes["xi"].items()}
            grads = {k: (x * shape(x)).sum(0) / (2 * sigma ** 2 * N) for k, x in st.pes["xi"].items()}
            st.pes["params"] = [w[:2 * N] for w in res.params]
        else:
            grads = {k: (e * shape(e)).sum(0) / (2 * sigma ** 2 * N) for k, e in eps.items()}
        return grads, res

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
        learners = make_learners(theta, self.spec)
        lo = self.cfg.learner.loss_inputs
        if self.backward in (fast_backward, sgd_backward):
            inits = [torch.stack(ps) for ps in zip(*v.inits)]               # (R, n_in + 1, n_out)
            r = rollout(learners, inits, v.xs.transpose(0, 1), v.ys.transpose(0, 1), self.cfg.optimizee, lo,
                        self.backward, self.cfg.meta.be_formula)
            curves = r.losses.transpose(0, 1)                                # (R, T)
            ent = r.entropy.double().mean((0, 2))                            # (T, n_hidden, R) -> (n_hidden,)
        else:
            rs = [rollout(learners, init, xs, ys, self.cfg.optimizee, lo, self.backward, self.cfg.meta.be_formula)
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
            inner = {"params": st.inner.params, "t": st.inner.t, "cursor": st.inner.cursor,
                     "task": None if self.family.continue_cursor else
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
    res = unroll(make_learners(leaf, t0.spec), params, xs, ys, t0.cfg.optimizee,
                 dataclasses.replace(meta, batch_entropy=any(be)), t0.cfg.learner.loss_inputs,
                 t0.backward, be_weight)
    grads = meta_gradient(res.total.sum(), leaf)
    be_term = res.be_term.detach().expand_as(res.total)
    out = []
    for p, (tr, st) in enumerate(zip(trainers, states)):
        tr.advance(st, {k: v[p] for k, v in grads.items()}, [w[p] for w in res.params])
        out.append({"outer_loss": float(res.total[p].detach()), "inner_loss": float(res.outer[p].detach()),
                    "be_term": float(be_term[p])})
    return out


