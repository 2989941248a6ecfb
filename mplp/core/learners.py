"""Learners: the message functions g and the update function f (thesis §4.1, Eq. 4-5).

Each learner maps rows of features to outputs:

    f        [m_j (|m|), x_i]        -> 1      weight update of w_ij      (Eq. 5)
    g_lin    [m_j (|m|), w_ij]       -> |m|    message from w_ij to input i
    g_act    [m (|m|), z]            -> |m|    one learner per activation type
    g_loss   [l, pred|prob, target]  -> |m|    one learner per loss type (or [pred, target])

``NeuralLearners`` parameterises each with ``[BatchNorm] -> Linear(in, H) -> ReLU ->
Linear(H, out)`` whose weights live in the flat dict ``theta``;  ``SGDLearners``
are the hand-derived functions of Table 2 / Appendix C with which MPLP *is* SGD.
Both plug into the same backward (``mplp.core.backward``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mplp.core.config import ExperimentConfig
from mplp.core.optimizee import activation_derivative

BN_EPS = 1e-8  # added to the (Bessel-corrected) std, as the released code


@dataclass(frozen=True)
class LearnerSpec:
    """Shapes and switches of a learner set (derived from an experiment config)."""

    message_size: int
    hidden: int
    activations: tuple[str, ...]
    loss: str
    batch_norm: bool
    learned_lr: bool
    lr: float
    loss_inputs: str = "full"  # "full": [loss, pred, target]; "prediction_target": [pred, target]
    kind: str = "neural"       # "neural" or "sgd" (Table 2's functions with a learned log lr)
    n_out: int = 1             # optimizee outputs (the "sgd" kind's MSE message divides by it)

    def in_out(self) -> dict[str, tuple[int, int]]:
        """Input and output sizes of every learner, keyed by its name in ``theta``."""
        m = self.message_size
        n_loss_in = 3 if self.loss_inputs == "full" else 2
        sizes = {"f": (m + 1, 1), "g_lin": (m + 1, m)}
        for a in self.activations:
            sizes[f"g_act.{a}"] = (m + 1, m)
        sizes[f"g_loss.{self.loss}"] = (n_loss_in, m)
        return sizes


def uniform(shape: tuple, fan_in: int, generator: torch.Generator, dtype: torch.dtype = torch.float32,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """``torch.nn.Linear``-style U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn in float64 (the same
    numbers whatever ``dtype``)."""
    b = 1.0 / math.sqrt(fan_in)
    return ((2 * torch.rand(*shape, generator=generator, dtype=torch.float64) - 1) * b).to(dtype=dtype, device=device)


def init_theta(spec: LearnerSpec, generator: torch.Generator,
               dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Draw meta-parameters ``theta`` with ``torch.nn.Linear``-style initialisation.

    Keys: ``<learner>.w1 (in, H)``, ``.b1 (H,)``, ``.w2 (H, out)``, ``.b2 (out,)`` and,
    with batch-norm, ``.bn_scale (in,)`` = 1, ``.bn_shift (in,)`` = 0; plus ``lr`` ()
    when the learning rate is learned.
    """
    theta: dict[str, torch.Tensor] = {}
    if spec.kind == "sgd":                   # the positive control: only the lr is learned
        return {"log_lr": torch.tensor(math.log(spec.lr), dtype=dtype, device=device)}

    def draw(shape, fan_in):
        return uniform(shape, fan_in, generator, dtype, device)

    for name, (n_in, n_out) in spec.in_out().items():
        if spec.batch_norm:
            theta[f"{name}.bn_scale"] = torch.ones(n_in, dtype=dtype, device=device)
            theta[f"{name}.bn_shift"] = torch.zeros(n_in, dtype=dtype, device=device)
        theta[f"{name}.w1"] = draw((n_in, spec.hidden), n_in)
        theta[f"{name}.b1"] = draw((spec.hidden,), n_in)
        theta[f"{name}.w2"] = draw((spec.hidden, n_out), spec.hidden)
        theta[f"{name}.b2"] = draw((n_out,), spec.hidden)
    if spec.learned_lr:
        theta["lr"] = torch.tensor(spec.lr, dtype=dtype, device=device)
    return theta


def batch_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Normalise each feature of ``x`` ``(N, d)`` over all N rows of this call.

    No running statistics (thesis §5.2); std with Bessel correction plus 1e-8 and a
    learned per-feature scale and shift (released code).
    """
    mean = x.mean(0)
    std = x.std(0, unbiased=True)
    return (x - mean) / (std + BN_EPS) * scale + shift


def mlp_apply(theta: dict[str, torch.Tensor], name: str, x: torch.Tensor, batch_norm_on: bool) -> torch.Tensor:
    """Learner ``name`` on rows ``x`` ``(N, in)`` -> ``(N, out)``; no output activation."""
    if batch_norm_on:
        x = batch_norm(x, theta[f"{name}.bn_scale"], theta[f"{name}.bn_shift"])
    h = torch.relu(x @ theta[f"{name}.w1"] + theta[f"{name}.b1"])
    return h @ theta[f"{name}.w2"] + theta[f"{name}.b2"]


class NeuralLearners:
    """Learners parameterised by ``theta`` (each call's rows share batch-norm statistics)."""

    def __init__(self, theta: dict[str, torch.Tensor], spec: LearnerSpec):
        self.theta, self.spec = theta, spec

    @property
    def lr(self) -> torch.Tensor | float:
        return self.theta["lr"] if self.spec.learned_lr else self.spec.lr

    def _apply(self, name, rows):
        return mlp_apply(self.theta, name, rows, self.spec.batch_norm)

    def f(self, rows: torch.Tensor) -> torch.Tensor:
        return self._apply("f", rows)

    def g_lin(self, rows: torch.Tensor) -> torch.Tensor:
        return self._apply("g_lin", rows)

    def g_act(self, kind: str, rows: torch.Tensor) -> torch.Tensor:
        return self._apply(f"g_act.{kind}", rows)

    def g_loss(self, kind: str, rows: torch.Tensor) -> torch.Tensor:
        return self._apply(f"g_loss.{kind}", rows)


class SGDLearners:
    """The hand-derived learners of Table 2 and Appendix C (message size 1).

    f = x * m, g_lin = w * m, g_act = act'(z) * m, g_loss = dL/d(output) per sample
    (MSE-as-mse/2: (pred - y) / n_out; softmax cross-entropy: p - y, Eq. 25).
    With them the MPLP update ``w - clamp(lr * mean_b f)`` is exactly an SGD step
    while ``|lr * grad| <= 1``.  Rows must use ``loss_inputs = "full"``.
    """

    def __init__(self, lr: float, loss: str, n_out: int):
        self.lr, self.loss, self.n_out = lr, loss, n_out

    @staticmethod
    def f(rows):
        return rows[:, :1] * rows[:, 1:2]

    @staticmethod
    def g_lin(rows):
        return rows[:, :1] * rows[:, 1:2]

    @staticmethod
    def g_act(kind, rows):
        return activation_derivative(kind, rows[:, 1:2]) * rows[:, :1]

    def g_loss(self, kind, rows):
        if kind != self.loss:
            raise ValueError(f"SGDLearners built for loss {self.loss!r}, called for {kind!r}")
        feature, target = rows[:, 1:2], rows[:, 2:3]
        if kind == "mse":
            return (feature - target) / self.n_out
        # xent: the softmax probability is clipped in the feature; the clip is
        # inactive (gradient p - y) unless a probability saturates.
        return feature - target


class LearnedLrSGD(SGDLearners):
    """Table 2's functions with the lr as the one meta-parameter, ``lr = exp(theta["log_lr"])``
    (the positive control: the meta-trainer has to find the tuned SGD lr).  ``theta["log_lr"]``
    may carry leading population dimensions ``(...)``."""

    def __init__(self, theta: dict[str, torch.Tensor], spec: LearnerSpec):
        self.loss, self.n_out = spec.loss, spec.n_out
        self.theta, self.spec = theta, spec

    @property
    def lr(self) -> torch.Tensor:
        return self.theta["log_lr"].exp()


def make_learners(theta: dict[str, torch.Tensor], spec: LearnerSpec):
    """The learners of ``spec.kind`` over ``theta``: ``NeuralLearners`` or ``LearnedLrSGD``."""
    return LearnedLrSGD(theta, spec) if spec.kind == "sgd" else NeuralLearners(theta, spec)


def learner_spec(cfg: ExperimentConfig) -> LearnerSpec:
    """The learner set an experiment needs: one g_act for the hidden activation (if any)."""
    lc, o = cfg.learner, cfg.optimizee
    acts = (o.activation,) if len(o.sizes) > 2 else ()
    return LearnerSpec(lc.message_size, lc.hidden, acts, o.loss, lc.batch_norm, lc.learned_lr, lc.lr,
                       lc.loss_inputs, lc.kind, o.sizes[-1])
