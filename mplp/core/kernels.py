"""The broadcast-ReLU-reduce layers of the factorised learners, as fused kernels.

    f_reduce(A, s, w, c)[..., i, j, h] = 1/B sum_b relu(A[..., b, j, h] + s[..., b, i] w[..., h] + c[..., h])
    g_reduce(A, s, w, c)[..., b, i, h] =     sum_j relu(A[..., b, j, h] + s[..., i, j] w[..., h] + c[..., h])

``A`` ``(..., B, J, H)`` is the message features' share of a learner's first layer, ``s``
the (batch-normalised) scalar feature: the layer input ``(..., B, I)`` for f, the weight
``(..., I, J)`` for g_lin; ``w`` ``(..., H)`` its row of the first layer, ``c`` ``(..., H)``
the bias.  Leading population dimensions broadcast.

On the CPU they run as C++ kernels (``csrc/reduce_relu.cpp``, compiled with the machine's
g++ on first use and cached) with hand-written adjoints, registered as torch operators so
that ``torch.compile`` graphs call them; they never build the B x I x J x H tensor.
Elsewhere (CUDA), or where the extension cannot be built, the same formulas run as torch
ops (``backend()`` says which).  Both are tested against each other and against autograd.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("csrc") / "reduce_relu.cpp"
_STATE = {"loaded": None, "reason": ""}
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]


def _cache_dir() -> Path:
    """Where the built extension lives: per source, flags, torch version and CPU model."""
    try:
        cpu = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    except OSError:
        cpu = ""
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(FLAGS).encode() + torch.__version__.encode()
                         + cpu.encode()).hexdigest()[:16]
    return cache_root() / "extensions" / key


def cache_root() -> Path:
    """The per-machine build cache (``MPLP_CACHE_DIR``, default ``~/.cache/mplp``)."""
    return Path(os.environ.get("MPLP_CACHE_DIR", Path.home() / ".cache" / "mplp"))


def _wanted() -> bool:
    return os.environ.get("MPLP_KERNELS", "cpp").lower() not in ("torch", "0", "off", "false", "no")


def load() -> bool:
    """Build (first time on a machine: about a minute) and load the C++ kernels; returns
    whether they are available.  ``MPLP_KERNELS=torch`` keeps the torch formulas."""
    if _STATE["loaded"] is not None:
        return _STATE["loaded"]
    if not _wanted():
        _STATE.update(loaded=False, reason="MPLP_KERNELS=torch")
        return False
    try:
        from torch.utils import cpp_extension

        build = _cache_dir()
        build.mkdir(parents=True, exist_ok=True)
        if not (build / "mplp_reduce_relu.so").exists():
            print("mplp: building the C++ kernels for this machine (once, about a minute) ...", flush=True)
        # also when built: cpp_extension holds a lock on the build directory, so processes that
        # start together (two long runs, a sweep's workers) wait for one build instead of loading
        # a library another is still writing
        cpp_extension.load(name="mplp_reduce_relu", sources=[str(_SOURCE)], extra_cflags=FLAGS,
                           extra_ldflags=["-fopenmp"], build_directory=str(build), is_python_module=False,
                           verbose=False)
        _register()
        _STATE.update(loaded=True, reason="C++ kernels")
    except Exception as e:  # no compiler, no ninja, unsupported platform, ...
        _STATE.update(loaded=False, reason=f"C++ kernels unavailable: {type(e).__name__}: {e}"[:300])
    return _STATE["loaded"]


def backend() -> str:
    """``"cpp"`` when the C++ kernels run on the CPU, else ``"torch (<why>)"``."""
    return "cpp" if load() else f"torch ({_STATE['reason']})"


def _register() -> None:
    """Shapes for torch.compile's tracing and the adjoints for autograd."""
    ops, lib = torch.ops.mplp, "mplp::"
    grads4 = lambda A, s, w, c: (torch.empty_like(A), torch.empty_like(s), torch.empty_like(w), torch.empty_like(c))

    torch.library.register_fake(lib + "f_reduce")(
        lambda A, s, w, c, shared: A.new_empty(A.shape[0], s.shape[2], A.shape[2], A.shape[3]))
    torch.library.register_fake(lib + "f_reduce_backward")(lambda G, A, s, w, c, shared: grads4(A, s, w, c))
    torch.library.register_fake(lib + "g_reduce")(
        lambda A, s, w, c: A.new_empty(A.shape[0], A.shape[1], s.shape[1], A.shape[3]))
    torch.library.register_fake(lib + "g_reduce_backward")(lambda G, A, s, w, c: grads4(A, s, w, c))
    torch.library.register_fake(lib + "relu")(lambda x: torch.empty_like(x))
    torch.library.register_fake(lib + "relu_backward")(lambda G, h: torch.empty_like(h))

    def save_inputs(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:4])
        ctx.shared = inputs[4] if len(inputs) > 4 else None

    torch.library.register_autograd(
        lib + "f_reduce", lambda ctx, G: tuple(ops.f_reduce_backward(G, *ctx.saved_tensors, ctx.shared)) + (None,),
        setup_context=save_inputs)
    torch.library.register_autograd(
        lib + "g_reduce", lambda ctx, G: tuple(ops.g_reduce_backward(G, *ctx.saved_tensors)), setup_context=save_inputs)

    def save_output(ctx, inputs, output):
        ctx.save_for_backward(output)

    torch.library.register_autograd(lib + "relu", lambda ctx, G: ops.relu_backward(G, ctx.saved_tensors[0]),
                                    setup_context=save_output)


# -- the formulas in torch (reference, CUDA, and fallback) --------------------------------------


def f_reduce_torch(A, s, w, c):
    C = s.unsqueeze(-1) * w[..., None, None, :] + c[..., None, None, :]          # (..., B, I, H)
    return torch.relu(A.unsqueeze(-3) + C.unsqueeze(-2)).sum(-4) / A.shape[-3]


def g_reduce_torch(A, s, w, c):
    D = s.unsqueeze(-1) * w[..., None, None, :] + c[..., None, None, :]          # (..., I, J, H)
    return torch.relu(A.unsqueeze(-3) + D.unsqueeze(-4)).sum(-2)


def _flat(A, s, w, c):
    """Broadcast the leading dimensions and flatten them into one population dimension P."""
    lead = torch.broadcast_shapes(A.shape[:-3], s.shape[:-2], w.shape[:-1], c.shape[:-1])
    A = A.expand(*lead, *A.shape[-3:]).reshape(-1, *A.shape[-3:])
    s = s.expand(*lead, *s.shape[-2:]).reshape(-1, *s.shape[-2:])
    w = w.expand(*lead, w.shape[-1]).reshape(-1, w.shape[-1])
    c = c.expand(*lead, c.shape[-1]).reshape(-1, c.shape[-1])
    return lead, A, s, w, c


def _use_cpp(A) -> bool:
    return A.device.type == "cpu" and load()


def relu(x):
    """``relu(x)``; on the CPU an operator whose adjoint reads the output, so a compiled graph
    keeps ``relu(x)`` (needed anyway by the next layer's adjoint) rather than a boolean mask."""
    return torch.ops.mplp.relu(x) if _use_cpp(x) else torch.relu(x)


def f_reduce(A, s, w, c):
    """``1/B sum_b relu(A[b, j] + s[b, i] w + c)``: A ``(..., B, J, H)``, s ``(..., B, I)``,
    w, c ``(..., H)`` -> ``(..., I, J, H)`` (the f learner's hidden layer, averaged over b).
    When ``s`` needs no gradient and at least half its entries of a member share their
    smallest value (MNIST's background pixels), the kernels treat those entries at once: exact,
    about (shared fraction) less work."""
    if not _use_cpp(A):
        return f_reduce_torch(A, s, w, c)
    shared = not s.requires_grad      # s is data: entries sharing one value are summed at once
    lead, A, s, w, c = _flat(A, s, w, c)
    R = torch.ops.mplp.f_reduce(A, s, w, c, shared)
    return R.reshape(*lead, *R.shape[1:])


def g_reduce(A, s, w, c):
    """``sum_j relu(A[b, j] + s[i, j] w + c)``: A ``(..., B, J, H)``, s ``(..., I, J)``,
    w, c ``(..., H)`` -> ``(..., B, I, H)`` (the g_lin learner's hidden layer, summed over j)."""
    if not _use_cpp(A):
        return g_reduce_torch(A, s, w, c)
    lead, A, s, w, c = _flat(A, s, w, c)
    S = torch.ops.mplp.g_reduce(A, s, w, c)
    return S.reshape(*lead, *S.shape[1:])
