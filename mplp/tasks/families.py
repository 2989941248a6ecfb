"""Task families: where the inner batches come from.

sinewave (thesis §5.1-5.2): ``y = a sin(x + p)``, p ~ U(phase), a ~ U(amplitude),
   x ~ U(x_range).  A task is a fixed sample of ``(T + 1) * B`` points walked in
   order, one batch per inner step (released code); a new task starts at batch 0.
mnist (§5.3): the unshuffled training split walked in order by one cursor that
   carries on across inner-problem resets (released code), wrapping at the end.
Validation tasks are drawn once from a seed: sinewave, ``n_runs`` tasks; mnist, the
first T batches of ``val_split`` for every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mplp.core.config import TaskConfig
from mplp.tasks.data import mnist
from mplp.core.optimizee import init_params


@dataclass
class BatchTask:
    """A stream of batches: ``x (N, n_in)``, ``y (N, ...)`` cut into batches of B in order."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int

    @property
    def n_batches(self) -> int:
        return self.x.shape[0] // self.batch_size

    def batches(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batches ``start .. start + count - 1`` (wrapping): ``(count, B, ...)`` each."""
        idx = (torch.arange(start, start + count) % self.n_batches)
        rows = (idx[:, None] * self.batch_size + torch.arange(self.batch_size)[None, :]).to(self.x.device)
        return self.x[rows], self.y[rows]


@dataclass
class SinewaveTask(BatchTask):
    """A sinewave task: its sample of points and the ``amplitude`` and ``phase`` behind it."""

    amplitude: float = 1.0
    phase: float = 0.0

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.sin(x + self.phase)


class SinewaveFamily:
    """Sinewave regression tasks; every task owns its sample of points."""

    continue_cursor = False  # a new task starts at its batch 0

    def __init__(self, cfg: TaskConfig, dtype=torch.float32, device="cpu"):
        self.cfg, self.dtype, self.device = cfg, dtype, device

    def _uniform(self, lo_hi, shape, gen):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)

    def sample(self, gen: torch.Generator, T: int) -> SinewaveTask:
        B = self.cfg.batch_size
        a = self._uniform(self.cfg.amplitude, (), gen)
        p = self._uniform(self.cfg.phase, (), gen)
        x = self._uniform(self.cfg.x_range, ((T + 1) * B, 1), gen)
        y = a * torch.sin(x + p)
        return SinewaveTask(x.to(self.dtype).to(self.device), y.to(self.dtype).to(self.device), B,
                            float(a), float(p))

    def validation_tasks(self, n: int, gen: torch.Generator, T: int) -> list[BatchTask]:
        return [self.sample(gen, T) for _ in range(n)]


class MNISTFamily:
    """MNIST classification on one fixed data stream (the training split)."""

    continue_cursor = True

    def __init__(self, cfg: TaskConfig, dtype=torch.float32, device="cpu"):
        self.cfg = cfg
        x, y = mnist("train", cfg.subset, dtype, device)
        self.train = BatchTask(x, y, cfg.batch_size)
        vx, vy = mnist(cfg.val_split, cfg.subset, dtype, device)
        self.val = BatchTask(vx, vy, cfg.batch_size)

    def sample(self, gen: torch.Generator, T: int) -> BatchTask:
        return self.train

    def validation_tasks(self, n: int, gen: torch.Generator, T: int) -> list[BatchTask]:
        if self.val.n_batches < T:
            raise ValueError(f"validation split has {self.val.n_batches} batches, fewer than T={T}")
        return [self.val] * n


def make_family(cfg: TaskConfig, dtype=torch.float32, device="cpu"):
    """The task family named by ``cfg.name``."""
    if cfg.name == "sinewave":
        return SinewaveFamily(cfg, dtype, device)
    if cfg.name == "mnist":
        return MNISTFamily(cfg, dtype, device)
    raise ValueError(f"unknown task {cfg.name!r}; expected 'sinewave' or 'mnist'")


@dataclass
class ValidationSet:
    """Fixed validation problems (drawn once from ``validation.seed``).

    xs: ``(R, T, B, n_in)``, ys: ``(R, T, B, ...)`` the T batches of each run;
    inits: R lists of optimizee parameters.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    inits: list[list[torch.Tensor]]


def validation_set(cfg, dtype=torch.float32, device="cpu", family=None) -> ValidationSet:
    """The validation set of experiment config ``cfg``: same seed, same problems,
    whatever the learner, so every configuration is judged on the same runs."""

    family = family or make_family(cfg.task, dtype, device)
    T, n = cfg.meta.T, cfg.validation.n_runs
    gen = torch.Generator().manual_seed(cfg.validation.seed)
    tasks = family.validation_tasks(n, gen, T)
    inits = [init_params(cfg.optimizee.sizes, gen, dtype, device) for _ in range(n)]
    batches = [t.batches(0, T) for t in tasks]
    return ValidationSet(torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches]), inits)
