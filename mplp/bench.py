"""``mplp bench``: time outer steps of the fast path and of the dense reference.

Settings are the thesis' (Tables 3-5).  One outer step = a K-step unroll plus the
meta-gradient (what the meta-trainer does, without the Adam update).  Both paths see
the same theta, inner state and batches; their meta-gradients must agree.  Times are
medians over ``steps`` repetitions after warm-up (which includes compilation).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from mplp.core.config import MetaConfig, OptimizeeConfig, TaskConfig
from mplp.core.backward import dense_backward
from mplp.core.fast import engine, fast_backward
from mplp.core.learners import LearnerSpec, NeuralLearners, init_theta
from mplp.core.optimizee import init_params
from mplp.meta.outer import meta_gradient
from mplp.tasks.families import make_family
from mplp.core.unroll import unroll
from mplp.meta.trainer import resolve_device
from mplp.chapters import ablation, mnist_be, sinewave
from mplp.meta.loop import train_population

SETTINGS = {
    # Table 3 (§5.1): |m| = 1, H = 80, K = 10, no batch-norm, fixed lr, loss node [pred, target]
    "sinewave": dict(task=TaskConfig(name="sinewave"), sizes=(1, 20, 20, 1), loss="mse", m=1, H=80, K=10,
                     bn=False, learned=False, lr=1e-3, loss_inputs="prediction_target", be=False),
    # Table 4 (§5.2), its most expensive cell: |m| = 8, H = 50, K = 5, batch-norm, learned lr
    "ablation": dict(task=TaskConfig(name="sinewave", amplitude=(1.0, 5.0)), sizes=(1, 20, 20, 1), loss="mse",
                     m=8, H=50, K=5, bn=True, learned=True, lr=1e-3, loss_inputs="full", be=False),
    # Table 5 (§5.3): MNIST, |m| = 24, H = 40, K = 5, batch-norm, learned lr, batch-entropy term
    "mnist": dict(task=TaskConfig(name="mnist"), sizes=(784, 32, 20, 10), loss="xent", m=24, H=40, K=5,
                  bn=True, learned=True, lr=1e-2, loss_inputs="full", be=True),
}


WARMUP = 3   # untimed outer steps after the first (which compiles)


@dataclass
class BenchResult:
    """One ``mplp bench`` measurement (times in milliseconds per outer step)."""

    config: str
    population: int
    device: str
    threads: int
    engine: str
    fast_ms_per_step: float
    reference_ms_per_step: float
    speedup: float
    rel_error: float
    fast_peak_mem_mb: float
    reference_peak_mem_mb: float
    compile_s: float
    machine: str


def _peak_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS of the process (monotone)


def _reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def problem(name: str, population: int = 1, device="cpu", seed: int = 0):
    """theta, params, batches of a setting; with population P > 1 every tensor gets a leading P."""
    s = SETTINGS[name]
    spec = LearnerSpec(s["m"], s["H"], ("relu",), s["loss"], s["bn"], s["learned"], s["lr"], s["loss_inputs"])
    fam = make_family(dataclasses.replace(s["task"], batch_size=32), torch.float32, device)
    members = []
    for p in range(population):
        g = torch.Generator().manual_seed(seed + p)
        theta = init_theta(spec, g, torch.float32, device)
        params = init_params(s["sizes"], g, torch.float32, device)
        task = fam.sample(g, 100)
        xs, ys = task.batches(37 * p, s["K"])
        members.append((theta, params, xs, ys))
    if population == 1:
        return spec, s, members[0], members
    st = torch.stack
    theta = {k: st([m[0][k] for m in members]) for k in members[0][0]}
    params = [st([m[1][l] for m in members]) for l in range(len(s["sizes"]) - 1)]
    # batches as (K, P, B, ...): the unroll walks the first dimension
    return spec, s, (theta, params, st([m[2] for m in members], 1), st([m[3] for m in members], 1)), members


def outer_grad(spec, s, theta, params, xs, ys, backward):
    """Meta-gradient of one K-step unroll (summed over population members)."""
    opt = OptimizeeConfig(s["sizes"], "relu", s["loss"])
    meta = MetaConfig(K=s["K"], T=100, batch_entropy=s["be"])
    leaf = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
    res = unroll(NeuralLearners(leaf, spec), params, xs, ys, opt, meta, spec.loss_inputs, backward)
    return meta_gradient(res.total.sum(), leaf)


def _time(fn, steps, device):
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_bench(name: str, population: int = 1, steps: int = 20, device="cpu",
              reference_steps: int | None = None) -> BenchResult:
    """Measure one setting; the reference runs member by member (it has no population)."""
    if name not in SETTINGS:
        raise ValueError(f"unknown bench config {name!r}; expected one of {tuple(SETTINGS)}")
    if population < 1 or steps < 1:
        raise ValueError(f"--population and --steps must be >= 1 (got {population}, {steps})")

    device = str(resolve_device(device))
    spec, s, batched, members = problem(name, population, device)
    # fast path: warm-up (compilation) then timing
    _reset_peak(device)
    t0 = time.perf_counter()
    fast_grads = outer_grad(spec, s, *batched, fast_backward)
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(WARMUP):          # allocator and caches settle after the first calls
        outer_grad(spec, s, *batched, fast_backward)
    fast_t, _ = _time(lambda: outer_grad(spec, s, *batched, fast_backward), steps, device)
    fast_mem = _peak_mb(device)
    compile_s = max(0.0, first - fast_t)
    # dense reference, member by member, on the same inputs
    _reset_peak(device)
    ref = [outer_grad(spec, s, *m, dense_backward) for m in members]
    ref_t, _ = _time(lambda: [outer_grad(spec, s, *m, dense_backward) for m in members],
                     reference_steps or max(1, min(steps, 3)), device)
    ref_mem = _peak_mb(device)
    num = den = 0.0
    for p, g in enumerate(ref):
        for k in g:
            f = fast_grads[k][p] if population > 1 else fast_grads[k]
            num += float(((f - g[k]) ** 2).sum())
            den += float((g[k] ** 2).sum())
    rel = math.sqrt(num / max(den, 1e-300))
    return BenchResult(name, population, device, torch.get_num_threads(), engine(),
                       round(fast_t * 1e3, 2), round(ref_t * 1e3, 2), round(ref_t / fast_t, 1), rel,
                       round(fast_mem, 1), round(ref_mem, 1), round(compile_s, 1), _machine(device))


def _machine(device) -> str:
    """The CPU model (or GPU name) and the thread count."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        name = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.machine()
    return f"{name}, {torch.get_num_threads()} threads"


def format_result(r) -> str:
    lines = [f"{k}: {v}" for k, v in asdict(r).items()]
    return "\n".join(lines)


def to_json(r) -> str:
    return json.dumps(asdict(r), sort_keys=True)


# -- long-run throughput: real training, validation included --------------------------------------


def _throughput_configs(name: str, population: int):
    """The thesis settings as the long runs train them: seeds 0 .. P-1 of §5.1's text setting
    (Table 3, 300,000 steps), of §5.2's most expensive cell (120,000) and, for MNIST (Table 5,
    150,000), P/2 seeds with the batch-entropy term and P/2 without, as one population."""

    if name == "sinewave":
        return [sinewave.chapter_config(s, 300_000, 300, 3000, "prediction_target", [1.0, 1.0], False)
                for s in range(population)]
    if name == "ablation":
        base = ablation.base_config(120_000, 300, 20)
        cell = ablation.Cell(message_size=8, batch_norm=True, learned_lr=True)
        return [ablation.cell_config(base, cell, s) for s in range(population)]
    if name == "mnist":
        if population % 2:
            raise ValueError("--population for mnist must be even (half the runs with the term, half without)")
        cfgs = mnist_be.run_configs(mnist_be.base_config(150_000, 100, 150, 0, adam_bias_correction=False),
                                    population // 2)
        return cfgs[False] + cfgs[True]
    raise ValueError(f"unknown bench config {name!r}; expected one of {tuple(SETTINGS)}")


@dataclass
class ThroughputResult:
    """Outer steps per hour of one population trained as the long runs train it (``mplp.meta.loop.train_population``,
    validation and checkpoints included), after ``warmup`` steps that compile."""

    config: str
    population: int
    threads: int
    engine: str
    steps: int
    seconds: float
    population_steps_per_hour: float     # outer steps of the whole population (each member's)
    run_steps_per_hour: float            # population_steps_per_hour * population
    machine: str


def train_throughput(name: str, population: int = 5, steps: int = 300, warmup: int = 30) -> ThroughputResult:
    """Train ``population`` runs of setting ``name`` for ``warmup`` then ``steps`` more outer steps
    in a temporary store; time the second part."""
    import tempfile


    cfgs = _throughput_configs(name, population)
    with tempfile.TemporaryDirectory() as root:
        train_population(cfgs, out_root=root, progress=False, max_steps=warmup)
        t0 = time.perf_counter()
        train_population(cfgs, out_root=root, resume=True, progress=False, max_steps=warmup + steps)
        dt = time.perf_counter() - t0
    rate = steps / dt * 3600
    return ThroughputResult(name, population, torch.get_num_threads(), engine(), steps, round(dt, 1),
                            round(rate), round(rate * population), _machine("cpu"))
