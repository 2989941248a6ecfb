"""The fast message-passing backward: factorised learners and fused reductions.

The first layer of every learner is linear in its inputs, and for the weight w_ij of
a linear layer those inputs split into a part that depends on the output j (the
message m_bj) and a part that depends on the input i (x_bi, for f) or on (i, j)
(w_ij, for g_lin).  Batch-norm statistics over the rows (b, i, j) factorise the same
way, because each part is the same value replicated over the other indices.  So the
hidden pre-activation of row (b, i, j) is ``A[b, j] + C[b, i]`` (f) or
``A[b, j] + D[i, j]`` (g_lin), and since the last layer is linear the reduction (mean
over b for f, sum over j for g_lin) is taken *before* it:

    f:     update_ij = mean_b relu(A_bj + C_bi) @ W2 + b2          (I, J)
    g_lin: msg_bi    = sum_j  relu(A_bj + D_ij) @ W2 + J * b2      (B, I, |m|)

Nothing of size B x I x J x (|m| + 1) is built; the B x I x J x H broadcast-add,
ReLU and reduction, and its adjoint, are C++ kernels (``mplp.core.kernels``).  Every tensor
may carry leading population dimensions ``...`` (theta entries ``(..., in, H)``, params
``(..., I, J)``).  Equal, up to rounding, to ``backward.dense_backward`` (tested).

The engine: an outer step's K-step unroll (``unroll.unroll``) runs as one graph compiled
by ``torch.compile`` with its reverse pass, and a validation rollout as one graph per
inner step, so that a step costs its arithmetic rather than some 2,000 eager operations
and their autograd bookkeeping (``MPLP_COMPILE=0`` runs them eagerly; ``engine()`` says
what runs).  Compiled graphs are cached on disk (inductor's cache, per shape and machine).
"""

from __future__ import annotations

import gc
import sys
import os

import torch

from mplp.core import kernels
from mplp.core.backward import loss_features
from mplp.core.learners import BN_EPS
from mplp.core.optimizee import ForwardCache, LossNode

# -- the engine: how steps run ------------------------------------------------------------------

_ENGINE = {"step": None, "reason": ""}
_STEPS: dict[tuple, object] = {}   # static step configuration -> compiled step
_SEEN: set = set()                 # (configuration, grad mode, shapes) already run compiled


def _compile_wanted() -> bool:
    return os.environ.get("MPLP_COMPILE", "1").lower() not in ("0", "off", "false", "no")


def tune_allocator() -> bool:
    """Keep freed memory for reuse (glibc ``mallopt``): no trimming, and the largest mmap
    threshold (32 MB).  The fast path allocates and frees many buffers of 1-40 MB per
    step; with glibc's defaults they come from fresh ``mmap`` pages every time, and the
    page faults about doubled the eager kernels' step time (benchmarks/README.md).  Returns
    whether it applied (glibc only; ``MPLP_MALLOC_TUNING=0`` turns it off)."""
    if os.environ.get("MPLP_MALLOC_TUNING", "1").lower() in ("0", "off", "false", "no"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):
        return False


def _select() -> None:
    """Decide once whether unrolls and steps run as compiled graphs (``torch.compile``, with
    their reverse pass) or eagerly, and say why; load the C++ kernels."""
    if _ENGINE["step"] is not None:
        return
    tune_allocator()
    kernels.load()
    if not _compile_wanted():
        _ENGINE.update(step="eager", reason="MPLP_COMPILE=0")
        return
    try:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        probe = torch.compile(lambda a: (a * 2).relu().sum(), dynamic=False, fullgraph=True)
        with torch.enable_grad():  # the first fast-path call may come from a no-grad validation
            probe(torch.randn(3, requires_grad=True)).backward()
        _ENGINE.update(step="compiled", reason="torch.compile (inductor)")
    except Exception as e:  # no compiler, unsupported platform, ...
        _ENGINE.update(step="eager", reason=f"torch.compile unavailable: {type(e).__name__}: {e}"[:300])


def use_engine(step: str) -> str:
    """Force how inner steps run ("compiled" or "eager"); returns ``engine()``."""
    if step not in ("compiled", "eager"):
        raise ValueError(f"unknown step mode {step!r}; expected 'compiled' or 'eager'")
    _ENGINE.update(step=None, reason="")
    _STEPS.clear()
    _SEEN.clear()
    old = os.environ.get("MPLP_COMPILE")
    os.environ["MPLP_COMPILE"] = "1" if step == "compiled" else "0"
    try:
        _select()
    finally:
        if old is None:
            os.environ.pop("MPLP_COMPILE")
        else:
            os.environ["MPLP_COMPILE"] = old
    return engine()


def engine() -> str:
    """What computes the fast path: the reduce kernels and how steps run, e.g.
    ``"kernels cpp, steps compiled"`` or ``"kernels cpp, steps eager (MPLP_COMPILE=0)"``."""
    _select()
    step = _ENGINE["step"] if _ENGINE["step"] == "compiled" else f"eager ({_ENGINE['reason']})"
    return f"kernels {kernels.backend()}, steps {step}"


# -- factorised batch-norm ---------------------------------------------------------------------


def _stats(v: torch.Tensor, dims: tuple[int, ...], reps: int):
    """Mean and Bessel-corrected std of a feature whose values ``v`` each stand for
    ``reps`` identical rows of the learner call (reduced over ``dims``, kept)."""
    n = 1
    for d in dims:
        n *= v.shape[d]
    mean = v.mean(dims, keepdim=True)
    var = ((v - mean) ** 2).sum(dims, keepdim=True) * reps / (n * reps - 1)
    return mean, var.sqrt()


def _rowmm(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Rows times a (population of) weight matrices: X ``(*L, *rows, d)``, W ``(*L, d, o)``
    -> ``(*L, *rows, o)``, as one (batched) matrix product over all rows; broadcasting
    W over the rows instead would split it into many tiny products."""
    lead = W.dim() - 2
    rows = X.shape[lead:-1]
    Y = X.reshape(*X.shape[:lead], -1, X.shape[-1]) @ W
    return Y.reshape(*X.shape[:lead], *rows, W.shape[-1])


def _norm(v, mean, std, scale, shift):
    return (v - mean) / (std + BN_EPS) * scale + shift


class FastLearners:
    """View of ``theta`` for the fast path (same keys as ``learners.init_theta``)."""

    def __init__(self, theta: dict[str, torch.Tensor], spec):
        self.theta, self.spec = theta, spec

    @property
    def lr(self):
        return self.theta["lr"] if self.spec.learned_lr else self.spec.lr

    def p(self, name, part):
        return self.theta[f"{name}.{part}"]

    def node(self, name: str, X: torch.Tensor) -> torch.Tensor:
        """Learner ``name`` on node rows ``X`` ``(..., B, J, d)`` (batch-norm over B x J)."""
        if self.spec.batch_norm:
            mean, std = _stats(X, (-3, -2), 1)
            X = _norm(X, mean, std, self.p(name, "bn_scale")[..., None, None, :], self.p(name, "bn_shift")[..., None, None, :])
        h = kernels.relu(_rowmm(X, self.p(name, "w1")) + self.p(name, "b1")[..., None, None, :])
        return _rowmm(h, self.p(name, "w2")) + self.p(name, "b2")[..., None, None, :]

    def _message_part(self, name, M, I):
        """``A`` ``(..., B, J, H)``: the message features' share of the first layer."""
        m = M.shape[-1]
        if self.spec.batch_norm:
            mean, std = _stats(M, (-3, -2), I)
            M = _norm(M, mean, std, self.p(name, "bn_scale")[..., None, None, :m], self.p(name, "bn_shift")[..., None, None, :m])
        return _rowmm(M, self.p(name, "w1")[..., :m, :])

    def _scalar_part(self, name, v, dims, reps, m):
        """The last input feature's share of the first layer as ``(s, w, c)``: the hidden
        pre-activation adds ``s * w + c``, with ``s`` ``(..., P, Q)`` the feature normalised
        without its learned scale and shift, which are folded into the weight row ``w`` and the
        bias ``c`` ``(..., H)``; so ``s`` is data where ``v`` is (the network's input)."""
        w1, b1 = self.p(name, "w1")[..., m, :], self.p(name, "b1")
        if not self.spec.batch_norm:
            return v, w1, b1
        mean, std = _stats(v, dims, reps)
        scale, shift = self.p(name, "bn_scale")[..., m, None], self.p(name, "bn_shift")[..., m, None]
        return (v - mean) / (std + BN_EPS), scale * w1, shift * w1 + b1

    def f_layer(self, M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``mean_b f([m_bj, x_bi])``: M ``(..., B, J, m)``, x ``(..., B, I)`` -> ``(..., I, J)``."""
        I, J, m = x.shape[-1], M.shape[-2], M.shape[-1]
        A = self._message_part("f", M, I)
        R = kernels.f_reduce(A, *self._scalar_part("f", x, (-2, -1), J, m))     # (..., I, J, H)
        return _rowmm(R, self.p("f", "w2")).squeeze(-1) + self.p("f", "b2")[..., None, :]

    def g_lin_layer(self, M: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``sum_j g_lin([m_bj, w_ij])``: M ``(..., B, J, m)``, w ``(..., I, J)`` -> ``(..., B, I, m)``."""
        B, J, m = M.shape[-3], M.shape[-2], M.shape[-1]
        A = self._message_part("g_lin", M, w.shape[-2])
        S = kernels.g_reduce(A, *self._scalar_part("g_lin", w, (-2, -1), B, m))  # (..., B, I, H)
        return _rowmm(S, self.p("g_lin", "w2")) + J * self.p("g_lin", "b2")[..., None, None, :]


def fast_backward(learners, params: list[torch.Tensor], cache: ForwardCache, node: LossNode,
                  activation: str, loss: str, loss_inputs: str = "full") -> list[torch.Tensor]:
    """Drop-in for ``backward.dense_backward`` with neural learners; leading dims allowed.

    ``learners`` is a ``NeuralLearners`` (or ``FastLearners``) over ``theta``.
    Returns ``mean_b f`` per layer, ``(..., n_in + 1, n_out)``.
    """
    fl = learners if isinstance(learners, FastLearners) else FastLearners(learners.theta, learners.spec)
    msg = fl.node(f"g_loss.{loss}", loss_features(node, loss_inputs))   # (..., B, n_out, m)
    updates: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
    for l in reversed(range(len(params))):
        if l < len(params) - 1:
            z = cache.preacts[l]
            msg = fl.node(f"g_act.{activation}", torch.cat([msg, z.unsqueeze(-1)], dim=-1))
        updates[l] = fl.f_layer(msg, cache.inputs[l])
        if l > 0:
            msg = fl.g_lin_layer(msg, params[l])[..., :-1, :]            # bias row dropped
    return updates


# -- compiled graphs -------------------------------------------------------------


def compiled(fn, key: tuple, *args):
    """``fn(*args)`` as one compiled graph (forward and, under autograd, its reverse pass)
    when the engine compiles, else eagerly.  ``key`` names ``fn``'s static configuration;
    ``torch.compile`` keys shapes, dtypes and grad mode itself (``dynamic=False``)."""
    if torch.compiler.is_compiling():                 # already inside a compiled region
        return fn(*args)
    _select()
    if _ENGINE["step"] != "compiled":
        return fn(*args)
    cfn = _STEPS.get(key)
    if cfn is None:
        cfn = _STEPS[key] = torch.compile(fn, dynamic=False, fullgraph=True)
    tensors = [t for t in torch.utils._pytree.tree_leaves(args) if torch.is_tensor(t)]
    sig = (key, torch.is_grad_enabled(), tuple((t.dtype, tuple(t.shape)) for t in tensors))
    first = sig not in _SEEN
    if first and not _SEEN and sys.stderr.isatty():      # a terminal; a notebook shows no such note
        print("mplp: compiling the engine's graphs (about a minute at the first step of each shape; "
              "MPLP_COMPILE=0 runs eagerly instead)", file=sys.stderr, flush=True)
    out = cfn(*args)
    if first:                              # the first call of a shape compiled (or loaded) a graph
        _SEEN.add(sig)
        _settle_garbage()
    return out


def _settle_garbage() -> None:
    """Move everything alive after a compilation (tens of thousands of objects) out of the
    garbage collector's sight (``gc.freeze``): otherwise its full collections, triggered by
    the many small objects each step allocates, walk them all and cost about 10 % of a step."""
    gc.collect()
    gc.freeze()
