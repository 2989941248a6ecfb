"""The book's trained MPLPs as artefacts: list them, load one, train your own MLP with it.

``available()`` lists every meta-trained MPLP in the committed results (experiment,
setting, seed, outer steps, last validation outer-loss); ``load(name)`` gives one with its
config and ``theta``; ``optimize(sizes, xs, ys, optimizer)`` trains a fresh MLP of any
layer sizes with it, one inner step per batch, as the thesis' Fig. 11 does beyond T.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from mplp.core.config import ExperimentConfig, OptimizeeConfig
from mplp.core.fast import fast_backward
from mplp.core.learned_optimizer import MPLP
from mplp.core.optimizee import init_params
from mplp.store import DamagedResultError, RunResult, committed_root, load_run


@dataclass(frozen=True)
class Pretrained:
    """One trained MPLP in a results store; ``name`` is ``<experiment>/<config hash>``."""

    name: str
    experiment: str
    setting: str            # |m|, batch norm, lr learned or fixed; the optimizee it trained
    seed: int
    steps: int              # outer steps trained (a running multi-session run: so far)
    status: str             # complete, running or diverged
    val_loss: float         # last validation outer-loss (sum of inner losses over T)
    path: Path


@dataclass
class TrainedOptimizer:
    """A loaded trained MPLP: its listing, the config it was meta-trained with and ``theta``."""

    info: Pretrained
    config: ExperimentConfig
    theta: dict[str, torch.Tensor]


@dataclass
class Optimized:
    """What ``optimize`` did: the loss before each inner step ``losses (N,)`` and the final
    ``params`` (list of ``(n_in + 1, n_out)`` tensors, bias in the last row)."""

    losses: torch.Tensor
    params: list[torch.Tensor]


def _setting(cfg: ExperimentConfig) -> str:
    lc, o = cfg.learner, cfg.optimizee
    bn, lr = "on" if lc.batch_norm else "off", "learned" if lc.learned_lr else "fixed"
    return (f"|m|={lc.message_size}, BN {bn}, lr {lr}; "
            f"{cfg.task.name} MLP {'-'.join(map(str, o.sizes))}, {o.activation}, {o.loss}, T={cfg.meta.T}")


def _describe(run: RunResult) -> Pretrained:
    cfg, v = run.config, run.validation["val_loss"]
    last = float(v[-1]) if len(v) else math.nan
    status = run.meta.get("status", "running") if run.finished else "running"
    return Pretrained(f"{run.path.parent.name}/{run.path.name}", cfg.experiment, _setting(cfg), cfg.seed,
                      int(run.meta.get("steps_done", 0)), status, last, run.path)


def available(root: str | Path | None = None) -> list[Pretrained]:
    """Every meta-trained MPLP (neural learners) stored under ``root`` (default: the committed
    ``results/``), by experiment and then validation loss; a run caught mid-write is left out."""
    root = Path(root) if root is not None else committed_root()
    out = []
    for d in sorted(root.glob("*/*/")):
        if not (d / "config.yaml").is_file() or not (d / "theta.pt").is_file():
            continue
        try:
            run = load_run(d)
        except DamagedResultError:
            continue
        if run.config.learner.kind == "neural":
            out.append(_describe(run))
    if not out:
        raise ValueError(f"no trained MPLP under {root}: the book's results come with a checkout of the repository "
                         "(pip install -e . there, or pass root=<its results/>)")
    return sorted(out, key=lambda p: (p.experiment, math.isnan(p.val_loss), p.val_loss))


def load(name: str, root: str | Path | None = None) -> TrainedOptimizer:
    """The trained MPLP ``name`` (``<experiment>/<hash>``, as ``available()`` lists it)."""
    root = Path(root) if root is not None else committed_root()
    parts = name.strip("/").split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise ValueError(f"{name!r} is not a trained optimizer's name; expected <experiment>/<hash>, "
                         "e.g. one listed by mplp.pretrained.available()")
    if not (root / parts[0] / parts[1] / "config.yaml").is_file():
        raise ValueError(f"no trained optimizer {name!r} under {root}; mplp.pretrained.available() lists them")
    run = load_run(root / parts[0] / parts[1])
    if run.config.learner.kind != "neural":
        raise ValueError(f"{name!r} is not a neural MPLP (learner.kind {run.config.learner.kind!r})")
    return TrainedOptimizer(_describe(run), run.config, run.theta)


def optimize(sizes, xs: torch.Tensor, ys: torch.Tensor, optimizer: str | TrainedOptimizer,
             seed: int = 0, backward=fast_backward) -> Optimized:
    """Train a fresh MLP of layer ``sizes`` (``(n_in, ..., n_out)``, initialised from ``seed``)
    with a trained MPLP: one inner step on each batch ``xs (N, B, n_in)``, ``ys (N, B, ...)``.
    The MLP's hidden activation and loss are the optimizer's (its learners know only those)."""
    opt = load(optimizer) if isinstance(optimizer, str) else optimizer
    sizes = tuple(int(s) for s in sizes)
    o = opt.config.optimizee
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes {sizes}: expected at least an input and an output size, all >= 1")
    if (len(sizes) > 2) != (len(o.sizes) > 2):
        raise ValueError(f"{opt.info.name} was trained on an MLP {'with' if len(o.sizes) > 2 else 'without'} hidden "
                         f"layers ({'-'.join(map(str, o.sizes))}); give sizes of the same kind")
    want_y = (*xs.shape[:2],) if o.loss == "xent" else (*xs.shape[:2], sizes[-1])
    if xs.dim() != 3 or xs.shape[-1] != sizes[0] or tuple(ys.shape) != want_y:
        ys_shape = "(N, B) labels" if o.loss == "xent" else f"(N, B, {sizes[-1]})"
        raise ValueError(f"xs must be (N, B, {sizes[0]}) and ys {ys_shape} with the same N and B; got "
                         f"{tuple(xs.shape)} and {tuple(ys.shape)}")
    dtype = next(iter(opt.theta.values())).dtype
    mplp = MPLP.from_config(opt.config, backward)
    mplp = dataclasses.replace(mplp, spec=dataclasses.replace(mplp.spec, n_out=sizes[-1]),
                               optimizee=OptimizeeConfig(sizes, o.activation, o.loss))
    params = init_params(sizes, torch.Generator().manual_seed(seed), dtype)
    r = mplp.rollout(opt.theta, params, xs.to(dtype), ys if o.loss == "xent" else ys.to(dtype))
    return Optimized(r.losses, r.params)
