"""Runs of the other choice, where the thesis text and its released code disagree.

The book follows the code (see the Deviations appendix). For the disagreements that can
change a result, this module re-runs a chapter's setting with the text's choice and
compares the final meta-parameters of both on the same footing: each final ``theta`` is
validated by the *book's* configuration (same validation runs, same metric, same
batch-entropy formula), so only the training differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mplp.chapters import ablation, mnist_be
from mplp.core.config import ExperimentConfig
from mplp.store import RunResult
from mplp.meta.source import Store
from mplp.chapters.profiles import load_profile
from mplp.chapters.registry import Chapter, register
from mplp.meta.trainer import MetaTrainer

BEST_CELL = ablation.Cell(message_size=8, batch_norm=True, learned_lr=True)   # §5.2's best configuration


@dataclass
class OtherChoice:
    """One disagreement, run both ways on the same seeds.

    book, other: the validation outer-loss of each seed's final theta ``(n_seeds,)``;
    entropy_book / entropy_other: the last hidden layer's batch entropy there.
    """

    point: str
    setting: str
    book_choice: str
    other_choice: str
    steps: int
    seeds: list[int]
    book: list[float]
    other: list[float]
    entropy_book: list[float] = field(default_factory=list)
    entropy_other: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median over seeds of other / book (1: the choice does not matter)."""
        return float(np.median(np.asarray(self.other) / np.asarray(self.book)))

    @property
    def separated(self) -> bool:
        """True when the two ranges over seeds do not overlap."""
        return max(self.book) < min(self.other) or max(self.other) < min(self.book)


@dataclass
class Revalidation:
    """One theta validated by a book configuration: the validation outer-loss and the
    last hidden layer's batch entropy (nan without hidden activations)."""

    loss: float
    entropy: float


def _revalidate(book_cfg: ExperimentConfig, run: RunResult, step: int, theta, store: Store) -> Revalidation:
    """``theta`` (of ``run`` at outer ``step``) validated under ``book_cfg``; stored under
    results/deviations_validation/ so the report only reads it."""

    def compute():
        v = MetaTrainer(book_cfg).validate(theta)
        return Revalidation(v.loss, v.entropy[-1] if v.entropy else float("nan"))

    key = {"validated_by": book_cfg.hash(), "run": run.config.hash(), "step": step}
    return store.load_or_compute("deviations_validation", key, compute, Revalidation)


def _compare(point, setting, book_choice, other_choice, book_cfgs, flip: dict, store: Store) -> OtherChoice:
    other_cfgs = other_configs(book_cfgs, flip)
    book_runs, other_runs = store.train(book_cfgs), store.train(other_cfgs)
    S = book_cfgs[0].meta.S
    b = [_revalidate(c, r, S, r.theta, store) for c, r in zip(book_cfgs, book_runs)]
    o = [_revalidate(c, r, S, r.theta, store) for c, r in zip(book_cfgs, other_runs)]
    return OtherChoice(point, setting, book_choice, other_choice, S, [c.seed for c in book_cfgs],
                       [x.loss for x in b], [x.loss for x in o], [x.entropy for x in b], [x.entropy for x in o])


def ablation_configs(profile: str, n_seeds: int) -> list[ExperimentConfig]:
    """§5.2's best cell as chapter 2 runs it with ``profile``, seeds ``0 .. n_seeds - 1``."""
    p = load_profile("ablation", profile)
    if n_seeds > p["n_seeds"]:
        raise ValueError(f"n_seeds: chapter 2's {profile} profile has {p['n_seeds']} seeds (asked {n_seeds})")
    base = ablation.base_config(p["S"], p["validation_every"], p["validation_runs"], p["adam_bias_correction"])
    return [ablation.cell_config(base, BEST_CELL, s) for s in range(n_seeds)]


def mnist_configs(profile: str, n_seeds: int) -> list[ExperimentConfig]:
    """Chapter 3's runs with the batch-entropy term, as run with ``profile``."""
    p = load_profile("mnist", profile)
    if n_seeds > p["n_seeds"]:
        raise ValueError(f"n_seeds: chapter 3's {profile} profile has {p['n_seeds']} seeds (asked {n_seeds})")
    base = mnist_be.base_config(p["S"], p["T"], p["validation_every"], p["subset"], p["adam_bias_correction"])
    return mnist_be.run_configs(base, n_seeds)[True]


def adam_choices(cfg: ExperimentConfig) -> tuple[str, str]:
    """(the chapter's choice, the other one) of the outer Adam's bias correction: the released
    code has none (the default); the committed cpu runs were made with it."""
    code, corrected = "none (released code)", "bias-corrected (Kingma & Ba)"
    return (corrected, code) if cfg.meta.adam_bias_correction else (code, corrected)


@dataclass
class SplitCheck:
    """Chapter 3's picked optimizer validated on the first T batches of each split."""

    step: int
    test: float
    train: float


def mnist_validation_split(profile: str, store: Store) -> SplitCheck:
    """The thesis validates on the test split, the script on the training split: the
    chapter-3 optimizer picked for Figure 11, validated both ways."""
    picked, ck = mnist_be.pick_optimizer(store.train(mnist_configs(profile, load_profile("mnist", profile)["n_seeds"])))
    cfg = picked.config
    test = _revalidate(cfg.replace(**{"task.val_split": "test"}), picked, ck.step, ck.theta, store)
    train = _revalidate(cfg.replace(**{"task.val_split": "train"}), picked, ck.step, ck.theta, store)
    return SplitCheck(ck.step, test.loss, train.loss)


@dataclass
class DeviationsStudy:
    """The runs of the other choice (``choices``) and the validation-split check."""

    choices: list[OtherChoice]
    split: SplitCheck


def study(profile: str, ablation_seeds: int, mnist_seeds: int, store: Store | None = None) -> DeviationsStudy:
    """The other choice of Algorithm 2, of the outer Adam's beta1 and of its bias correction on
    §5.2's best cell, of Eq. 6's batch-entropy formula on §5.3, and of the MNIST validation split."""
    store = store if store is not None else Store()
    choices = [_compare(point, setting, book, other, cfgs, flip, store)
               for point, setting, book, other, cfgs, flip in comparisons(profile, ablation_seeds, mnist_seeds)]
    return DeviationsStudy(choices, mnist_validation_split(profile, store))


def comparisons(profile: str, ablation_seeds: int, mnist_seeds: int) -> list[tuple]:
    """Each run of the other choice: (point, setting, the book's choice, the other, the book's
    configs, the flip that makes the other's configs)."""
    abl = ablation_configs(profile, ablation_seeds)
    mn = mnist_configs(profile, mnist_seeds)
    setting_a = f"§5.2 best cell (|m| = 8, BN, learned lr), chapter 2's {profile} runs"
    return [
        ("unrolled outer loss, last update, reset rule (Alg. 1-2)", setting_a, "released code", "thesis text", abl,
         {"meta.unroll": "text"}),
        ("outer Adam beta1", setting_a, "0.99 (Tables 3-5)", "0.9 (script default)", abl, {"meta.beta1": 0.9}),
        ("outer Adam bias correction", setting_a, *adam_choices(abl[0]), abl,
         {"meta.adam_bias_correction": not abl[0].meta.adam_bias_correction}),
        ("batch entropy, Eq. 6", f"§5.3 with the term, chapter 3's {profile} runs", "pi e sigma^2 (code)",
         "2 pi e sigma^2 (text)", mn, {"meta.be_formula": "text"}),
    ]


def training_populations(profile: str, ablation_seeds: int, mnist_seeds: int) -> list[list[ExperimentConfig]]:
    """What ``study`` trains, population by population (the book's and the other choice's
    runs of each comparison, and the chapter-3 runs the validation-split check reads)."""
    pops = []
    for _, _, _, _, cfgs, flip in comparisons(profile, ablation_seeds, mnist_seeds):
        pops += [cfgs, other_configs(cfgs, flip)]
    pops.append(mnist_configs(profile, load_profile("mnist", profile)["n_seeds"]))
    return pops


def other_configs(book_cfgs: list[ExperimentConfig], flip: dict) -> list[ExperimentConfig]:
    return [c.replace(**{"experiment": "deviations", **flip}) for c in book_cfgs]


# The report chapter: its runs of the other choice at each deviation (what a sweep trains for it)
RECORD = register(Chapter(
    "report", "none: the thesis runs one choice",
    plan=lambda p: training_populations(p["alternatives_profile"], p["ablation_seeds"], p["mnist_seeds"])))
