"""The §5.1 sinewave experiment (thesis Table 3, Figures 3-7): MPLP with |m| = 1.

``study`` assembles chapter 1 from its parameters (the run, the tuned baselines, the
chosen checkpoint, the learners' input ranges and their correlation with SGD's
functions); ``verdicts`` tests §5.1's claims on it. The book and the claims ledger
read the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import baselines
from . import config as C
from . import results as R
from .analysis import (Checkpoint, InputRanges, agreement, choose_checkpoint, learned_function, plateau_end,
                       record_input_ranges)
from .claims import Verdict
from .plotting import FUNCTIONS, sgd_function


@dataclass
class SinewaveStudy:
    """Chapter 1's data: the run, ``tuned`` {"sgd", "adam"}, the ``checkpoint`` chosen by
    rule, the learners' recorded input ``ranges``, the ``learned`` functions of two
    inputs and ``corr``, their correlation with SGD's over those ranges."""

    cfg: C.ExperimentConfig
    run: R.RunResult
    tuned: dict[str, baselines.BaselineResult]
    checkpoint: Checkpoint
    ranges: InputRanges
    learned: dict
    corr: dict[str, float]

    def verdicts(self) -> list[Verdict]:
        v = self.run.validation
        return verdicts(v["step"], v["val_loss"], self.checkpoint, self.tuned["sgd"].best_metric,
                        self.tuned["adam"].best_metric, self.corr)


def chapter_config(seed: int, S: int, validation_every: int, snapshot_every: int, loss_inputs: str,
                   amplitude: list[float], adam_bias_correction: bool) -> C.ExperimentConfig:
    """Table 3's setting (``configs/sinewave_table3.yaml``, the released script's) with chapter
    1's profile values: ``loss_inputs`` "prediction_target" and ``amplitude`` [1, 1] are the
    thesis text's §5.1 variant (g_loss a surface of two inputs, as Figs. 4-7 plot it)."""
    return C.shipped("sinewave_table3").replace(**{
        "seed": seed, "meta.S": S, "validation.every": validation_every, "snapshot_every": snapshot_every,
        "learner.loss_inputs": loss_inputs, "task.amplitude": list(amplitude),
        "meta.adam_bias_correction": adam_bias_correction})


def study(seed: int, S: int, validation_every: int, snapshot_every: int, n_range_tasks: int,
          loss_inputs: str = "prediction_target", amplitude: list[float] = (1.0, 1.0),
          adam_bias_correction: bool = False, device: str = "cpu", store: R.Store | None = None) -> SinewaveStudy:
    """Chapter 1 from its parameters; stored results are read, missing ones computed
    (unless ``store`` is read-only)."""
    store = store if store is not None else R.Store()
    cfg = chapter_config(seed, S, validation_every, snapshot_every, loss_inputs, amplitude, adam_bias_correction)
    run = store.train([cfg], device=device)[0]
    tuned = baselines.tuned(cfg, store)
    ck = choose_checkpoint(run)
    ranges = store.load_or_compute(
        "sinewave_ranges", {"config": cfg.hash(), "step": ck.step, "n_tasks": n_range_tasks},
        lambda: record_input_ranges(cfg, ck.theta, n_tasks=n_range_tasks), InputRanges)
    learned = {name: learned_function(ck.theta, name) for name in FUNCTIONS}
    corr = {name: agreement(learned[name], sgd_function(name), *ranges.ranges[name]) for name in FUNCTIONS}
    return SinewaveStudy(cfg, run, tuned, ck, ranges, learned, corr)


def verdicts(steps: np.ndarray, losses: np.ndarray, checkpoint: Checkpoint, sgd: float, adam: float,
             corr: dict[str, float], strong: float = 0.8) -> list:
    """§5.1's claims tested on one run: validation ``losses`` at ``steps``, the chosen
    checkpoint, the tuned baselines' metrics and the learned-vs-SGD correlations."""
    end = plateau_end(steps, losses)
    last = int(steps[-1])
    if end is None:
        flat, ev = "partly", f"flat for the whole run ({last} steps): {losses[0]:.3g} -> {losses[-1]:.3g}"
    elif end > 0.1 * last:
        flat, ev = "yes", f"flat until step {end} of {last}"
    else:
        flat, ev = "no", f"the loss leaves its start by step {end} of {last}"
    out = [Verdict("an initial flat phase, ending around 50k outer steps", "§5.1, Fig. 3a",
                   "first validation after which the loss stays below 90 % of its start, later than 10 % "
                   "of the run (partly: the phase never ends within the run)", ev, flat)]
    v = checkpoint.val_loss
    out.append(Verdict("MPLP is better than learning-rate-tuned SGD at T steps", "§5.1, Fig. 3a",
                       "validation loss at the chosen checkpoint < tuned SGD's",
                       f"{v:.3g} vs SGD {sgd:.3g}", "yes" if v < sgd else "no"))
    out.append(Verdict("MPLP is worse than learning-rate-tuned Adam at T steps", "§5.1, Fig. 3a",
                       "validation loss at the chosen checkpoint > tuned Adam's",
                       f"{v:.3g} vs Adam {adam:.3g}", "yes" if v > adam else "no"))
    good = [k for k, c in corr.items() if np.isfinite(c) and abs(c) >= strong]
    sign = np.prod([np.sign(c) for c in corr.values()])
    n = len(corr)
    holds = "yes" if len(good) == n and sign > 0 else ("partly" if len(good) >= n / 2 else "no")
    out.append(Verdict("the learned functions resemble SGD's (Table 2)", "§5.1, Figs. 4-7",
                       f"|correlation| with the SGD surface >= {strong} for all {n} functions on the recorded "
                       "ranges, and the product of their signs positive",
                       ", ".join(f"{k} {c:+.2f}" for k, c in corr.items()) + f"; sign product {sign:+.0f}", holds))
    return out
