"""The meta-trainer: truncated BPTT over inner problems (thesis Algorithm 1).

Each outer step unrolls K inner steps from the carried (detached) inner state, takes
the gradient of the unroll's objective w.r.t. theta and applies one outer Adam step.
A new inner problem (task and optimizee init) is drawn when ``t + K > T`` (released
code; ``meta.unroll = "text"`` uses Algorithm 1's ``t + K >= T``).  The whole state
(theta, Adam moments, inner state, RNG states, history) is checkpointed, and a
resumed run gives bit-for-bit the result of an uninterrupted one on CPU.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from pathlib import Path
from dataclasses import dataclass, field

import torch

from mplp.core import config as C
from mplp import paths
from mplp import store as R
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

    def __init__(self, cfg: C.ExperimentConfig, dtype=torch.float32, device="cpu",
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
            raise R.DamagedResultError("the checkpoint is not one this library wrote; train with --restart")
        if d["config_hash"] != (config_hash or self.cfg.hash()):
            raise R.DamagedResultError(f"checkpoint belongs to config {d['config_hash']}, not {self.cfg.hash()}")
        for what, have in (("dtype", str(self.dtype).replace("torch.", "")), ("backward", backward_name(self))):
            if d.get(what, have) != have:    # checkpoints written before these were recorded pass
                raise R.StoreError(f"the checkpoint was written with {what} {d[what]!r}, this run uses {have!r}: "
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


class RunExistsError(R.StoreError):
    """A run directory holds an unfinished run that this call may not continue or replace."""


# A run whose outer updates were skipped this often (non-finite meta-gradients: diverged
# inner problems), or whose last validation is not finite, ends "diverged", not "complete".
DIVERGED_SKIP_FRACTION = 0.5


def backward_name(trainer: "MetaTrainer") -> str:
    """What computed a run: "dense" or "fast (<kernel backend>)" (recorded and checked on resume)."""
    if trainer.backward is sgd_backward:
        return "sgd (Table 2 in closed form)"
    return "dense" if trainer.backward is dense_backward else f"fast ({engine()})"


def final_status(st: TrainState, S: int) -> str:
    """"diverged" when the last validation is not finite or more than
    ``DIVERGED_SKIP_FRACTION`` of the outer updates were skipped; else "complete"."""
    last = st.val_rows[-1]["val_loss"] if st.val_rows else float("nan")
    if not math.isfinite(last) or st.skipped > DIVERGED_SKIP_FRACTION * max(S, 1):
        return "diverged"
    return "complete"


def _write_outputs(trainer: MetaTrainer, st: TrainState, out, status: str, population_size: int) -> None:
    R.write_csv(out / "validation.csv", st.val_rows)
    R.write_csv(out / "train.csv", st.train_rows)
    R.save_torch(out / "theta.pt", st.theta)
    R.save_torch(out / "snapshots.pt", st.snapshots)
    R.write_json(out / "meta.json", {
        "status": status, "config_hash": trainer.cfg.hash(), "steps_done": st.step,
        "steps_total": trainer.cfg.meta.S, "skipped_outer_updates": st.skipped,
        "wall_time_s": round(st.elapsed, 3), "dtype": str(trainer.dtype).replace("torch.", ""),
        "backward": backward_name(trainer), "resumes": st.resumes,
        "population_size": population_size, **R.machine_record(trainer.device)})
    R.write_manifest(out, R.RUN_FILES)


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


class _Run:
    """One run's bookkeeping inside the training loop: validation, logs, checkpoints."""

    def __init__(self, trainer: MetaTrainer, out_root, resume: bool, restart: bool = False,
                 extend_from: Path | None = None, lock: R.RunLock | None = None):
        cfg = self.cfg = trainer.cfg
        self.extend_from = Path(extend_from) if extend_from is not None else None
        self.population_size = 1       # runs sharing this run's wall time (set by train_population)
        self.trainer, self.out = trainer, R.run_dir(out_root, cfg)
        self.ckpt = self.out / R.CHECKPOINT
        # one owner at a time, until finish() / close(); a population takes every lock first
        self.lock = lock if lock is not None else R.RunLock(self.out).acquire()
        try:
            self._open(trainer, resume, restart)
        except BaseException:
            self.close()
            raise
        self.started = time.perf_counter() - self.st.elapsed

    def _open(self, trainer: MetaTrainer, resume: bool, restart: bool) -> None:
        for tmp in self.out.glob("*.tmp"):            # left by a process killed mid-write
            if tmp in R.own_files(self.out):
                tmp.unlink()
        if restart:                                    # only what the store wrote
            for f in R.own_files(self.out):
                f.unlink()
        if self.ckpt.exists():
            if not resume:
                raise RunExistsError(f"{self.out} holds an unfinished run; pass --resume (resume=True) to "
                                     "continue it, or --restart (restart=True) to discard it and start over")
            self.st = trainer.load_state_dict(R.load_checkpoint(self.out))
            self.st.resumes.append({"step": self.st.step, "dtype": str(trainer.dtype).replace("torch.", ""),
                                    "backward": backward_name(trainer)})
            return
        left = [f.name for f in self.out.iterdir() if f.name != ".lock"]
        if left:
            raise RunExistsError(self._refusal(left))
        self.st = trainer.init_state() if self.extend_from is None else self._extended(trainer)
        R.write_text(self.out / "config.yaml", C.dump(self.cfg))

    def _extended(self, trainer: MetaTrainer) -> TrainState:
        """The finished shorter run in ``extend_from``'s final state, to be continued to this
        config's S: the same trajectory as one uninterrupted run, since nothing but S differs."""
        src = self.extend_from
        shorter = R.load_run(src)                      # verified: complete and whole
        if not shorter.finished or not (src / R.FINAL_STATE).exists():
            raise R.StoreError(f"{src} cannot be extended: it is not finished or has no {R.FINAL_STATE} (runs "
                               "finished before extensions existed do not keep one)")
        a, b = shorter.config.to_dict(), self.cfg.to_dict()
        S0 = a["meta"].pop("S")
        b["meta"].pop("S")
        if a != b:
            diff = sorted(k for k in a if a[k] != b[k])
            raise C.ConfigError(f"--extend-from {src}: its config differs from this one in {', '.join(diff)}, "
                                "not only in meta.S")
        if S0 >= self.cfg.meta.S:
            raise C.ConfigError(f"--extend-from {src}: it ran {S0:,} outer steps; meta.S must be larger (got "
                                f"{self.cfg.meta.S:,})")
        if self.cfg.log_every and S0 % self.cfg.log_every:
            raise C.ConfigError(f"--extend-from {src}: its S = {S0:,} is not a multiple of log_every, so its last "
                                "logged mean covers other steps than an uninterrupted run's")
        st = trainer.load_state_dict(R.load_final_state(src), config_hash=shorter.config.hash())
        # A run validates and snapshots at its last step S0 even off their grids; an uninterrupted
        # run would not, so those records go (validation draws no random numbers: the trajectory
        # is unchanged, tests/test_trainer.py)
        dropped = []
        if S0 % self.cfg.validation.every and st.val_rows and st.val_rows[-1]["step"] == S0:
            st.val_rows.pop()
            dropped.append("validation")
        snap = self.cfg.snapshot_every
        if snap and S0 % snap and S0 in st.snapshots:
            del st.snapshots[S0]
            dropped.append("snapshot")
        st.resumes.append({"step": st.step, "extended_from": src.name, "dtype": str(trainer.dtype).replace("torch.", ""),
                           "backward": backward_name(trainer), **({"dropped_at_step": dropped} if dropped else {})})
        return st

    def _refusal(self, left: list[str]) -> str:
        """Why a directory with files but no checkpoint is not trained over, and what would be lost."""
        try:
            meta = R.read_json(self.out / "meta.json")
            what = f"status {meta.get('status')!r}, {meta.get('steps_done')} of {meta.get('steps_total')} outer steps"
        except (OSError, R.StoreError, AttributeError):
            what = "no readable meta.json"
        try:
            rows = max(0, len(R.read_text(self.out / "validation.csv").splitlines()) - 1)
        except (OSError, R.StoreError):
            rows = 0
        return (f"{self.out} holds a run that cannot be continued ({what}; no checkpoint.pt to resume from) or is "
                f"damaged; training again would overwrite {', '.join(sorted(left))} ({rows} validation rows). "
                "Pass --restart (restart=True) to discard it and start over, or restore the missing files")

    def close(self) -> None:
        self.lock.release()

    def checkpoint(self, status: str) -> None:
        self.st.elapsed = time.perf_counter() - self.started
        R.save_checkpoint(self.out, self.trainer.state_dict(self.st))
        _write_outputs(self.trainer, self.st, self.out, status, self.population_size)

    def maybe_validate(self) -> None:
        st, S = self.st, self.cfg.meta.S
        snap = self.cfg.snapshot_every
        if st.step % self.cfg.validation.every == 0 or st.step == S:
            if not st.val_rows or st.val_rows[-1]["step"] != st.step:
                st.val_rows.append(self.trainer.validate(st.theta).row(st.step))
            if snap == 0 or st.step % snap == 0 or st.step == S:
                st.snapshots[st.step] = {k: v.detach().cpu().clone() for k, v in st.theta.items()}

    def after_step(self, losses: dict) -> None:
        st, S = self.st, self.cfg.meta.S
        st.window.append(losses)
        if st.step % self.cfg.log_every == 0 or st.step == S:
            row = {"step": st.step}
            row.update({k: sum(w[k] for w in st.window) / len(st.window) for k in st.window[0]})
            st.train_rows.append(row)
            st.window = []
        self.maybe_validate()
        if st.step % self.cfg.checkpoint_every == 0 and st.step < S:
            self.checkpoint("running")

    def finish(self) -> R.RunResult:
        if self.st.step >= self.cfg.meta.S:
            self.st.elapsed = time.perf_counter() - self.started
            R.save_torch(self.out / R.FINAL_STATE, self.trainer.state_dict(self.st))     # kept: extensible
            _write_outputs(self.trainer, self.st, self.out, final_status(self.st, self.cfg.meta.S),
                           self.population_size)
            for f in (self.ckpt, self.out / R.CHECKPOINT_RECORD):
                if f.exists():
                    f.unlink()
        else:
            self.checkpoint("running")
        return R.load_run(self.out)


def _population_key(cfg: C.ExperimentConfig) -> dict:
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


class _DeferredInterrupt:
    """SIGINT (Ctrl-C) during a training loop sets a flag instead of raising, so the loop stops
    at a step boundary, where the state is whole (an interrupt between the outer update and the
    step counter would otherwise be checkpointed half-done).  A second Ctrl-C raises at once;
    the last periodic checkpoint is then the one to resume from."""

    def __init__(self):
        self.flag, self.old = False, None

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def train_population(cfgs: list[C.ExperimentConfig], out_root=None, resume: bool = False, device="cpu",
                     dtype=torch.float32, backward=fast_backward, progress: bool = True,
                     max_steps: int | None = None, restart: bool = False,
                     extend_from: list | None = None) -> list[R.RunResult]:
    """Meta-train several runs that share a configuration shape (e.g. the seeds of an
    ablation cell) as one batched program; each is stored as if run alone.

    Finished stored runs ("complete" or "diverged", verified) are returned as they are;
    unfinished ones resume with ``resume=True``; ``restart=True`` discards what is stored and
    starts over.  A directory holding files but no checkpoint is refused (``RunExistsError``),
    never trained over.  Each run directory is locked for the duration.  Runs at different
    steps, or a dense ``backward``, go one by one.  ``extend_from``: per config, None or the
    directory of a finished shorter run of the same config (only meta.S differs) that a new
    run continues from its final state instead of starting at step 0.
    """
    from tqdm import tqdm

    if not cfgs:
        raise ValueError("train_population needs at least one config")
    key = _population_key(cfgs[0])
    for c in cfgs[1:]:
        if _population_key(c) != key:
            raise C.ConfigError(f"population members must share optimizee, learner, task and meta (except "
                                f"meta.batch_entropy); {c.experiment} (seed {c.seed}) differs")
    hashes = [c.hash() for c in cfgs]
    if len(set(hashes)) != len(hashes):
        raise C.ConfigError("population members must differ (e.g. by seed): two configs are identical")
    dev = resolve_device(device)
    out_root = out_root if out_root is not None else paths.results_root()
    dtype_name = str(dtype).replace("torch.", "")
    results: dict[int, R.RunResult] = {}
    runs: dict[int, _Run] = {}
    locks: dict[int, R.RunLock] = {}
    try:
        pending = []
        for i, cfg in enumerate(cfgs):
            done = None if restart else R.find_run(out_root, cfg, dtype=dtype_name)
            if done is not None:
                results[i] = done
            else:
                pending.append(i)
        for i in pending:                             # every lock before anything is deleted or written
            locks[i] = R.RunLock(R.run_dir(out_root, cfgs[i])).acquire()
        for i in pending:
            runs[i] = _Run(MetaTrainer(cfgs[i], dtype, dev, backward), out_root, resume, restart,
                           (extend_from or [None] * len(cfgs))[i], lock=locks.pop(i))
        groups: dict[int, list[int]] = {}
        for i, r in runs.items():
            groups.setdefault(r.st.step, []).append(i)
        S = cfgs[0].meta.S
        stop = S if max_steps is None else min(S, max_steps)
        for step0, members in groups.items():
            group = [runs[i] for i in members]
            for r in group:
                r.population_size = len(group)
            batched = (group[0].trainer.backward in (fast_backward, sgd_backward) and len(group) > 1
                       and cfgs[0].meta.estimator == "tbptt")
            desc = cfgs[members[0]].experiment + (f" x{len(group)}" if len(group) > 1 else "")
            bar = tqdm(total=S, initial=step0, disable=not progress, unit="step", desc=desc, dynamic_ncols=True)
            try:
                with _DeferredInterrupt() as interrupt:
                    for r in group:
                        r.maybe_validate()
                    while group[0].st.step < stop:
                        if batched:
                            losses = population_step([r.trainer for r in group], [r.st for r in group])
                        else:
                            losses = [r.trainer.outer_step(r.st) for r in group]
                        for r, l in zip(group, losses):
                            r.after_step(l)
                        bar.update(1)
                        vals = [r.st.val_rows[-1]["val_loss"] for r in group if r.st.val_rows]
                        if vals:
                            bar.set_postfix(val=" ".join(f"{v:.4g}" for v in vals), refresh=False)
                        if interrupt.flag:                      # a step boundary: the state is whole
                            for r in group:
                                r.checkpoint("running")
                            raise KeyboardInterrupt
            finally:
                bar.close()
            for i, r in zip(members, group):
                results[i] = r.finish()
    finally:
        for r in runs.values():
            r.close()
        for lock in locks.values():                   # taken, but their runs never opened
            lock.release()
    return [results[i] for i in range(len(cfgs))]


def train(cfg: C.ExperimentConfig, out_root=None, resume: bool = False, device="cpu",
          dtype=torch.float32, backward=fast_backward, progress: bool = True,
          max_steps: int | None = None, restart: bool = False, extend_from=None) -> R.RunResult:
    """Meta-train ``cfg`` into ``<out_root>/<experiment>/<hash>/`` and return the stored run
    (``out_root`` defaults to ``paths.results_root()``, the repository's ``results/``).

    A complete stored run is returned as is.  An unfinished one needs ``resume=True``
    and continues from its checkpoint.  ``max_steps`` stops early (checkpointed,
    status "running"): a stand-in for an interruption.  ``extend_from``: the directory of a
    finished shorter run of the same config, continued from its final state.
    """
    return train_population([cfg], out_root, resume, device, dtype, backward, progress, max_steps, restart,
                            [extend_from])[0]
