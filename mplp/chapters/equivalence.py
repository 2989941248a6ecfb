"""MPLP can be SGD (thesis §4.2, Table 2, Appendices A-C), shown on real problems.

Runs MPLP with the hand-derived learners of Table 2 / Appendix C through the dense
message-passing backward, and plain SGD through ``torch.autograd``, from the same
initialisation on the same batches, and reports both loss curves and their gap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from mplp.core.config import OptimizeeConfig, TaskConfig
from mplp.chapters import peer
from mplp.meta.source import Store
from mplp.meta.baselines import inner_train
from mplp.claims.verdicts import Verdict
from mplp.core.learners import SGDLearners
from mplp.core.optimizee import PROB_CLIP, init_params, probability_clip
from mplp.chapters.peer import REL_TOL, PeerTable
from mplp.chapters.registry import Chapter, register
from mplp.tasks.families import make_family
from mplp.core.unroll import rollout

PROBLEMS = {
    "sinewave": (OptimizeeConfig((1, 20, 20, 1), "relu", "mse"),
                 TaskConfig(name="sinewave", phase=(0.0, math.pi), amplitude=(1.0, 1.0))),
    "mnist": (OptimizeeConfig((784, 32, 20, 10), "relu", "xent"), TaskConfig(name="mnist")),
}


@dataclass
class Equivalence:
    """MPLP-with-Table-2 next to autograd SGD on one problem.

    mplp_loss, sgd_loss: ``(T,)`` inner loss before each update;
    max_loss_diff: max_t |mplp - sgd|; max_param_rel_diff: largest relative difference
    of the final weights' displacement from the initialisation, over layers.
    """

    problem: str
    lr: float
    prob_clip: float
    mplp_loss: np.ndarray
    sgd_loss: np.ndarray
    max_loss_diff: float
    max_param_rel_diff: float


def compare_with_sgd(problem: str, steps: int, lr: float, batch_size: int = 32, seed: int = 0,
                     subset: int = 0, prob_clip: float = PROB_CLIP, dtype=torch.float64,
                     device="cpu") -> Equivalence:
    """Train one optimizee for ``steps`` steps both ways and compare.

    ``prob_clip`` is the cross-entropy node's probability clip (released code: 1e-8;
    0 disables it).  Once a probability saturates, autograd's gradient of the clipped
    loss is no longer Appendix C's sigma - y, and the two runs part by ~1e-8.
    """
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}; expected one of {tuple(PROBLEMS)}")
    if steps < 1 or lr <= 0:
        raise ValueError(f"steps must be >= 1 and lr > 0 (got steps={steps}, lr={lr})")
    opt, task_cfg = PROBLEMS[problem]
    task_cfg = dataclasses.replace(task_cfg, batch_size=batch_size, subset=subset)
    gen = torch.Generator().manual_seed(seed)
    task = make_family(task_cfg, dtype, device).sample(gen, steps)
    params = init_params(opt.sizes, gen, dtype, device)
    xs, ys = task.batches(0, steps)
    with probability_clip(prob_clip):
        mplp = rollout(SGDLearners(lr, opt.loss, opt.sizes[-1]), params, xs, ys, opt)
        sgd = inner_train("sgd", lr, [p[None] for p in params], xs[None], ys[None], opt)
    rel = max(float((a - b[0]).abs().max() / (b[0] - p).abs().max().clamp_min(1e-300))
              for a, b, p in zip(mplp.params, sgd.params, params))
    m, s = mplp.losses.cpu().double().numpy(), sgd.curves[0].cpu().double().numpy()
    return Equivalence(problem, lr, prob_clip, m, s, float(np.abs(m - s).max()), rel)


LOSS_TOL = 1e-12        # float64: "is SGD" means equal losses up to rounding
WEIGHT_TOL = 1e-6       # relative gap of the final weights' displacement


@dataclass
class SgdStudy:
    """Chapter 0's comparisons: ``runs`` maps "sinewave", "mnist" (released code's
    probability clip) and "mnist, no clip" to their ``Equivalence``; ``peer`` is the
    equivalence table against the thesis' released code (``mplp.chapters.peer``)."""

    runs: dict[str, Equivalence]
    peer: "PeerTable | None" = None

    def verdicts(self) -> list[Verdict]:
        """§4.2's claim, tested on the unclipped problems; the clipped one is evidence."""
        exact = {k: r.max_loss_diff < LOSS_TOL and r.max_param_rel_diff < WEIGHT_TOL for k, r in self.runs.items()}
        tested = [k for k in self.runs if k != "mnist"]
        ev = "; ".join(f"{k}: loss gap {r.max_loss_diff:.1e}, weight gap {r.max_param_rel_diff:.1e} "
                       f"over T = {len(r.sgd_loss)}" for k, r in self.runs.items())
        return [Verdict("MPLP with the hand-derived functions of Table 2 is SGD", "§4.2, Table 2, App. C",
                        f"float64, same init and batches: max |loss gap| < {LOSS_TOL:g} and relative weight "
                        f"gap < {WEIGHT_TOL:g} on {' and '.join(tested)}",
                        ev, "yes" if all(exact[k] for k in tested) else "no")] + self.peer_verdicts()

    def peer_verdicts(self) -> list[Verdict]:
        """The book's own check (not a thesis claim): its MPLP is the released code's."""
        if self.peer is None:
            return []
        p = self.peer
        return [Verdict("the book's MPLP computes what the thesis' released code computes", "SimonsThijs/MPLP @ 31403b7",
                        f"float64 replay of the golden truncations ({', '.join(p.cases)}) through the "
                        f"{', '.join(p.paths)} paths and the outer Adam: every inner loss, inner weight, outer "
                        f"objective and meta-gradient tensor within {REL_TOL:g} relative (tensors zero up to "
                        "rounding: zero on both sides)",
                        f"{p.n_compared} tensor comparisons, largest relative error {p.worst:.1e}, "
                        f"{p.n_zero} zero up to rounding on both sides", "yes" if p.all_ok else "no", kind="check")]


def study(seed: int, steps: int, lr_sinewave: float, lr_mnist: float, batch_size: int, mnist_subset: int,
          device: str = "cpu", peer_paths: list[str] | None = None, store: Store | None = None) -> SgdStudy:
    """Chapter 0 from its parameters: the three comparisons, stored under results/sgd/, and
    the equivalence table against the thesis' code through ``peer_paths`` (stored under
    results/peer/, keyed by the reference file's checksum; None: no table)."""
    store = store if store is not None else Store()

    def one(problem, lr, prob_clip=PROB_CLIP):
        key = dict(problem=problem, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                   subset=mnist_subset if problem == "mnist" else 0, prob_clip=prob_clip, device=device)
        return store.load_or_compute("sgd", key, lambda: compare_with_sgd(**key), Equivalence)

    table = None
    if peer_paths:
        key = {"paths": list(peer_paths), "reference": peer.reference_checksum(), "rel_tol": REL_TOL,
               "zero_tol": peer.ZERO_TOL}
        table = store.load_or_compute("peer", key, lambda: peer.table(tuple(peer_paths)), PeerTable)
    return SgdStudy({"sinewave": one("sinewave", lr_sinewave), "mnist": one("mnist", lr_mnist),
                     "mnist, no clip": one("mnist", lr_mnist, prob_clip=0.0)}, table)


RECORD = register(Chapter(
    "sgd", "no meta-training (a check of Table 2)",
    ("thesis §4.2, Table 2, Appendices A–C", "MPLP with Table 2's functions vs SGD; the book's MPLP vs the thesis' code"),
    study=study))
