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
ReLU and reduction is one small kernel, fused by ``torch.compile`` when it is
available (no B x I x J x H tensor in memory) and run eagerly otherwise
(``kernel_backend()`` says which).  Every tensor may carry leading population
dimensions ``...`` (theta entries ``(..., in, H)``, params ``(..., I, J)``).
Equal, up to rounding, to ``backward.dense_backward`` (tested).
"""

from __future__ import annotations

import os
import types

import torch

from .backward import loss_features
from .learners import BN_EPS
from .optimizee import ForwardCache, LossNode

# -- the fused kernels -----------------------------------------------------------------------


def _mean_b_relu(A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``mean_b relu(A[b, j] + C[b, i])``: A ``(..., B, J, H)``, C ``(..., B, I, H)`` -> ``(..., I, J, H)``."""
    # sum then divide: inductor vectorises this better than mean (measured 0.16 vs 0.28 ms)
    return torch.relu(A.unsqueeze(-3) + C.unsqueeze(-2)).sum(-4) / A.shape[-3]


def _sum_j_relu(A: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``sum_j relu(A[b, j] + D[i, j])``: A ``(..., B, J, H)``, D ``(..., I, J, H)`` -> ``(..., B, I, H)``."""
    return torch.relu(A.unsqueeze(-3) + D.unsqueeze(-4)).sum(-2)


_KERNELS: dict[tuple, object] = {}  # (name, grad mode, rank) -> compiled kernel
_BACKEND = {"name": None, "reason": ""}


def _compile_wanted() -> bool:
    return os.environ.get("MPLP_COMPILE", "1").lower() not in ("0", "off", "false", "no")


def _fresh(fn, tag: str):
    """A copy of ``fn`` with its own code object, hence its own torch.compile cache."""
    return types.FunctionType(fn.__code__.replace(co_name=f"{fn.__name__}_{tag}"), fn.__globals__,
                              f"{fn.__name__}_{tag}")


_EAGER = {"mean_b_relu": _mean_b_relu, "sum_j_relu": _sum_j_relu}


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


def _select_backend() -> None:
    """Try torch.compile once on a tiny problem; fall back to eager and say why."""
    if _BACKEND["name"] is not None:
        return
    tune_allocator()
    if not _compile_wanted():
        _BACKEND.update(name="eager", reason="MPLP_COMPILE=0")
        return
    try:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        probe = torch.compile(_fresh(_mean_b_relu, "probe"), dynamic=False)
        with torch.enable_grad():  # the first fast-path call may come from a no-grad validation
            a = torch.randn(2, 3, 4, requires_grad=True)
            c = torch.randn(2, 5, 4, requires_grad=True)
            probe(a, c).sum().backward()
        _BACKEND.update(name="compiled", reason="torch.compile (inductor)")
    except Exception as e:  # no compiler, unsupported platform, ...
        _BACKEND.update(name="eager", reason=f"torch.compile unavailable: {type(e).__name__}: {e}"[:300])


def use_backend(name: str) -> str:
    """Force the kernel backend ("compiled" or "eager"); returns ``kernel_backend()``."""
    if name not in ("compiled", "eager"):
        raise ValueError(f"unknown kernel backend {name!r}; expected 'compiled' or 'eager'")
    _BACKEND.update(name=None, reason="")
    _KERNELS.clear()
    old = os.environ.get("MPLP_COMPILE")
    os.environ["MPLP_COMPILE"] = "1" if name == "compiled" else "0"
    try:
        _select_backend()
    finally:
        if old is None:
            os.environ.pop("MPLP_COMPILE")
        else:
            os.environ["MPLP_COMPILE"] = old
    return kernel_backend()


def kernel_backend() -> str:
    """How the fused kernels run: ``"compiled: ..."`` or ``"eager: <why>"``."""
    _select_backend()
    return f"{_BACKEND['name']}: {_BACKEND['reason']}"


def _kernel(name: str, A: torch.Tensor):
    """The kernel ``name`` for this call context; each (grad mode, rank) gets its own
    compiled copy, so validation's no-grad, run-batched shapes and the training shapes
    keep separate compile caches."""
    _select_backend()
    if _BACKEND["name"] != "compiled":
        return _EAGER[name]
    key = (name, torch.is_grad_enabled(), A.dim())
    if key not in _KERNELS:
        tag = f"{'grad' if key[1] else 'nograd'}_{key[2]}d"
        _KERNELS[key] = torch.compile(_fresh(_EAGER[name], tag), dynamic=False)
    return _KERNELS[key]


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
        h = torch.relu(_rowmm(X, self.p(name, "w1")) + self.p(name, "b1")[..., None, None, :])
        return _rowmm(h, self.p(name, "w2")) + self.p(name, "b2")[..., None, None, :]

    def _message_part(self, name, M, I):
        """``A`` ``(..., B, J, H)``: the message features' share of the first layer."""
        m = M.shape[-1]
        if self.spec.batch_norm:
            mean, std = _stats(M, (-3, -2), I)
            M = _norm(M, mean, std, self.p(name, "bn_scale")[..., None, None, :m], self.p(name, "bn_shift")[..., None, None, :m])
        return _rowmm(M, self.p(name, "w1")[..., :m, :])

    def _scalar_part(self, name, v, dims, reps, m):
        """The last input feature's share (plus b1): ``v (..., P, Q)`` -> ``(..., P, Q, H)``."""
        if self.spec.batch_norm:
            mean, std = _stats(v, dims, reps)
            v = _norm(v, mean, std, self.p(name, "bn_scale")[..., m, None, None], self.p(name, "bn_shift")[..., m, None, None])
        return v.unsqueeze(-1) * self.p(name, "w1")[..., None, None, m, :] + self.p(name, "b1")[..., None, None, :]

    def f_layer(self, M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``mean_b f([m_bj, x_bi])``: M ``(..., B, J, m)``, x ``(..., B, I)`` -> ``(..., I, J)``."""
        I, J, m = x.shape[-1], M.shape[-2], M.shape[-1]
        A = self._message_part("f", M, I)
        C = self._scalar_part("f", x, (-2, -1), J, m)
        R = _kernel("mean_b_relu", A)(A, C)                       # (..., I, J, H)
        return _rowmm(R, self.p("f", "w2")).squeeze(-1) + self.p("f", "b2")[..., None, :]

    def g_lin_layer(self, M: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``sum_j g_lin([m_bj, w_ij])``: M ``(..., B, J, m)``, w ``(..., I, J)`` -> ``(..., B, I, m)``."""
        B, J, m = M.shape[-3], M.shape[-2], M.shape[-1]
        A = self._message_part("g_lin", M, w.shape[-2])
        D = self._scalar_part("g_lin", w, (-2, -1), B, m)     # (..., I, J, H)
        S = _kernel("sum_j_relu", A)(A, D)                        # (..., B, I, H)
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
