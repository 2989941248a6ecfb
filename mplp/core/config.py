"""Experiment configuration as data: one frozen dataclass per part, loaded from YAML.

Invalid values fail fast with a ``ConfigError`` naming the field, e.g.
``meta.K: must be <= meta.T (got K=20, T=10)``.  Defaults follow the thesis' released
code where text and code disagree (see the book's "Deviations and ambiguities").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mplp.core.optimizee import ACTIVATIONS, LOSSES

TASKS = ("sinewave", "mnist")
TASK_SHAPES = {"sinewave": (1, 1), "mnist": (784, 10)}
TASK_LOSSES = {"sinewave": "mse", "mnist": "xent"}


# Fields added after results were stored: (section, field) -> the value those results were
# computed with.  A config holding that value hashes as if the field did not exist, so the
# stored results stay addressable; any other value (e.g. a new default) gets a new hash and
# can never be served a result computed the old way (see ExperimentConfig.hash).
LATE_FIELDS = {("meta", "estimator"): "tbptt", ("meta", "es_sigma"): 0.01, ("meta", "es_pairs"): 8,
               ("meta", "adam_bias_correction"): True, ("learner", "kind"): "neural", ("meta", "hint_weight"): 0.0}


KINDS = ("neural", "sgd", "l2l", "mlp-optimizer", "stateful-mplp")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass(frozen=True)
class OptimizeeConfig:
    """The inner MLP: layer sizes, hidden activation and loss node."""

    sizes: tuple[int, ...] = (1, 20, 20, 1)
    activation: str = "relu"
    loss: str = "mse"


@dataclass(frozen=True)
class LearnerConfig:
    """Learners f, g_lin, g_act, g_loss: [BN] -> Linear(in, hidden) -> ReLU -> Linear."""

    message_size: int = 1
    hidden: int = 80
    batch_norm: bool = False
    learned_lr: bool = False
    lr: float = 1.0e-3          # fixed lr (sinewave) or initial value of the learned lr
    loss_inputs: str = "full"   # "full" (Eq. 4) or "prediction_target" (§5.1)
    kind: str = "neural"        # "neural" (theta: the learners' MLPs) or "sgd" (Table 2's functions, theta: log lr);
    #                             other learned optimizers: "l2l" (Andrychowicz et al. 2016), "mlp-optimizer" (Metz et al. 2019),
    #                             "stateful-mplp" (Randazzo et al. 2020: GRU carries, message_size, hidden = its first MLP layer)


@dataclass(frozen=True)
class TaskConfig:
    """Task family. sinewave: y = a sin(x + p); mnist: the thesis' normalised MNIST."""

    name: str = "sinewave"
    batch_size: int = 32
    phase: tuple[float, float] = (0.0, math.pi)
    amplitude: tuple[float, float] = (1.0, 1.0)
    x_range: tuple[float, float] = (-5.0, 5.0)
    val_split: str = "test"      # mnist: "test" (thesis text) or "train" (released script)
    subset: int = 0              # mnist: use only the first N examples of each split (0 = all)


@dataclass(frozen=True)
class MetaConfig:
    """Truncated BPTT (Algorithms 1-2) and the outer Adam."""

    K: int = 5
    T: int = 100
    S: int = 1000
    outer_lr: float = 1.0e-4
    beta1: float = 0.9           # released scripts; the thesis tables say 0.99
    beta2: float = 0.999
    eps: float = 1.0e-11
    grad_clip: float = 1.0       # element-wise clip of the meta-gradient before Adam
    adam_bias_correction: bool = False  # released code: none; True: Kingma & Ba's bias-corrected moments
    batch_entropy: bool = False  # add the Eq. 8 term (Algorithm 2)
    be_formula: str = "code"     # "code": pi*e ; "text": 2*pi*e (Eq. 6)
    be_threshold: float = 0.5
    unroll: str = "code"         # "code": drop 1st loss, update after every step; "text": Algorithm 2
    estimator: str = "tbptt"     # outer-gradient: "tbptt" (Algorithm 1), "es" or "pes" (chapter 4)
    es_sigma: float = 0.01       # es / pes: perturbation scale of theta
    es_pairs: int = 8            # es / pes: antithetic pairs per outer step
    hint_weight: float = 0.0     # "stateful-mplp": weight of Randazzo et al.'s hint loss (Eq. 12) in the objective


@dataclass(frozen=True)
class ValidationConfig:
    """Validation on fixed tasks and inner inits drawn once from ``seed``."""

    every: int = 300
    n_runs: int = 20
    seed: int = 12345


@dataclass(frozen=True)
class ExperimentConfig:
    """One meta-training run."""

    experiment: str = "sinewave"
    seed: int = 0
    optimizee: OptimizeeConfig = field(default_factory=OptimizeeConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    log_every: int = 10          # rows of train.csv average this many outer steps
    snapshot_every: int = 0      # keep theta every N steps (0: at every validation)
    checkpoint_every: int = 200  # resume checkpoint period (not part of the hash)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def hash(self) -> str:
        """12 hex digits identifying everything that changes results.  Fields added after
        results were stored (``LATE_FIELDS``) are left out while they hold the value those
        results were computed with, so those stay addressable and no other value maps to them."""
        d = self.to_dict()
        d.pop("checkpoint_every")
        for (part, name), default in LATE_FIELDS.items():
            if d[part][name] == default:
                d[part].pop(name)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, **changes) -> "ExperimentConfig":
        """Copy with dotted-path changes, e.g. ``replace(**{"meta.S": 10})``; validated.  A
        mapping given for a section (``replace(meta={"S": 2})``) is merged into it field by
        field: the section's other fields keep their values."""
        d = self.to_dict()
        for key, value in changes.items():
            node = d
            *path, last = key.split(".")
            for p in path:
                if not isinstance(node, dict) or p not in node:
                    raise ConfigError(f"{key}: unknown field")
                node = node[p]
            if not isinstance(node, dict) or last not in node:
                raise ConfigError(f"{key}: unknown field")
            if isinstance(node[last], dict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{key}: is a section; give a mapping of its fields or set {key}.<field>")
                unknown = sorted(set(value) - set(node[last]))
                if unknown:
                    raise ConfigError(f"{key}.{unknown[0]}: unknown field (valid: {', '.join(sorted(node[last]))})")
                node[last] = {**node[last], **value}
            else:
                node[last] = value
        return from_dict(d)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _coerce(value, typ, name):
    """Check/convert one YAML value to the field type ``typ``; errors name the field."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        args = typing.get_args(typ)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        if args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, t, f"{name}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {typ} for {name}")


def _build(cls, data, prefix):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field (valid: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = _build(typ, data[f.name], f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(data[f.name], typ, f"{prefix}{f.name}")
    return cls(**kwargs)


def _check(cond, field_name, msg):
    if not cond:
        raise ConfigError(f"{field_name}: {msg}")


def validate(c: ExperimentConfig) -> ExperimentConfig:
    """Raise ``ConfigError`` naming the first invalid field; return ``c`` otherwise."""
    _check_names_and_optimizee(c)
    _check_learner(c.learner)
    _check_task(c.task)
    _check_meta(c.meta)
    _check(c.meta.hint_weight == 0 or c.learner.kind == "stateful-mplp", "meta.hint_weight",
           f"only learner.kind 'stateful-mplp' has a hint loss (got {c.meta.hint_weight} with {c.learner.kind!r}); "
           "set it to 0")
    _check(c.learner.kind != "stateful-mplp" or c.meta.estimator == "tbptt", "meta.estimator",
           f"'stateful-mplp' is meta-trained by truncated BPTT only (got {c.meta.estimator!r}): its recorded "
           "standardisation constants live in theta, and ES / PES would perturb them; use tbptt")
    _check_schedule_and_bounds(c)
    return c


def _check_names_and_optimizee(c: ExperimentConfig) -> None:
    """Finite numbers, seeds, the experiment name, the task and the optimizee it fits."""
    o, t, v = c.optimizee, c.task, c.validation
    for name, value in _floats(c):
        _check(math.isfinite(value), name, f"must be a finite number (got {value})")
    _check(0 <= c.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED}] (got {c.seed})")
    _check(0 <= v.seed <= MAX_SEED, "validation.seed", f"must be in [0, {MAX_SEED}] (got {v.seed})")
    _check(c.experiment.replace("_", "").replace("-", "").isalnum(), "experiment",
           f"must be a plain name (letters, digits, - and _), got {c.experiment!r}")
    _check(t.name in TASKS, "task.name", f"unknown task {t.name!r}; expected one of {TASKS}")
    _check(o.activation in ACTIVATIONS, "optimizee.activation",
           f"unknown activation {o.activation!r}; expected one of {ACTIVATIONS}")
    _check(o.loss in LOSSES, "optimizee.loss", f"unknown loss {o.loss!r}; expected one of {LOSSES}")
    _check(len(o.sizes) >= 2 and all(s >= 1 for s in o.sizes), "optimizee.sizes",
           f"needs at least 2 positive sizes, got {list(o.sizes)}")
    n_in, n_out = TASK_SHAPES[t.name]
    _check(o.sizes[0] == n_in and o.sizes[-1] == n_out, "optimizee.sizes",
           f"task {t.name!r} needs input {n_in} and output {n_out}, got {list(o.sizes)}")
    _check(o.loss == TASK_LOSSES[t.name], "optimizee.loss",
           f"task {t.name!r} uses loss {TASK_LOSSES[t.name]!r}, got {o.loss!r}")


def _check_learner(lc: LearnerConfig) -> None:
    _check(lc.message_size >= 1, "learner.message_size", f"must be >= 1 (got {lc.message_size})")
    _check(lc.hidden >= 1, "learner.hidden", f"must be >= 1 (got {lc.hidden})")
    _check(lc.lr > 0 and math.isfinite(lc.lr), "learner.lr", f"must be a positive number (got {lc.lr})")
    _check(lc.loss_inputs in ("full", "prediction_target"), "learner.loss_inputs",
           f"must be 'full' or 'prediction_target' (got {lc.loss_inputs!r})")
    _check(lc.kind in KINDS, "learner.kind", f"must be one of {', '.join(map(repr, KINDS))} (got {lc.kind!r})")
    if lc.kind in ("l2l", "mlp-optimizer"):
        _check(lc.message_size == 1 and not lc.batch_norm and not lc.learned_lr, "learner.kind",
               f"{lc.kind!r} is not MPLP: message_size, batch_norm and learned_lr keep their defaults (1, false, false); "
               "learner.hidden sets its width")
    if lc.kind == "stateful-mplp":
        _check(not lc.batch_norm and not lc.learned_lr, "learner.kind",
               "'stateful-mplp' standardises its inputs and learns its output scale itself: batch_norm and "
               "learned_lr stay false")
    if lc.kind == "sgd":
        _check(lc.learned_lr and not lc.batch_norm and lc.message_size == 1, "learner.kind",
               "'sgd' (Table 2's functions, the lr their only meta-parameter) needs learned_lr: true, "
               "batch_norm: false and message_size: 1")


def _check_task(t: TaskConfig) -> None:
    _check(t.batch_size >= 2, "task.batch_size", f"must be >= 2 (got {t.batch_size})")
    _check(t.phase[0] <= t.phase[1], "task.phase", f"low > high in {list(t.phase)}")
    _check(t.amplitude[0] <= t.amplitude[1], "task.amplitude", f"low > high in {list(t.amplitude)}")
    _check(t.x_range[0] < t.x_range[1], "task.x_range", f"low >= high in {list(t.x_range)}")
    _check(t.val_split in ("test", "train"), "task.val_split", f"must be 'test' or 'train' (got {t.val_split!r})")
    _check(t.subset >= 0, "task.subset", f"must be >= 0 (got {t.subset})")


def _check_meta(m: MetaConfig) -> None:
    _check(m.K >= 2, "meta.K", f"must be >= 2 (got {m.K}): with K = 1 the unroll's outer loss does not depend on "
           "theta (its one loss precedes every update)")
    _check(m.T >= 1, "meta.T", f"must be >= 1 (got {m.T})")
    _check(m.K <= m.T, "meta.K", f"must be <= meta.T (got K={m.K}, T={m.T})")
    _check(m.S >= 0, "meta.S", f"must be >= 0 (got {m.S})")
    _check(m.outer_lr > 0, "meta.outer_lr", f"must be > 0 (got {m.outer_lr})")
    _check(0 <= m.beta1 < 1, "meta.beta1", f"must be in [0, 1) (got {m.beta1})")
    _check(0 <= m.beta2 < 1, "meta.beta2", f"must be in [0, 1) (got {m.beta2})")
    _check(m.eps > 0, "meta.eps", f"must be > 0 (got {m.eps})")
    _check(m.grad_clip > 0, "meta.grad_clip", f"must be > 0 (got {m.grad_clip})")
    _check(m.be_formula in ("code", "text"), "meta.be_formula", f"must be 'code' or 'text' (got {m.be_formula!r})")
    _check(m.unroll in ("code", "text"), "meta.unroll", f"must be 'code' or 'text' (got {m.unroll!r})")
    _check(m.estimator in ("tbptt", "es", "pes"), "meta.estimator",
           f"must be 'tbptt', 'es' or 'pes' (got {m.estimator!r})")
    _check(m.es_sigma > 0 and math.isfinite(m.es_sigma), "meta.es_sigma", f"must be > 0 (got {m.es_sigma})")
    _check(m.es_pairs >= 1, "meta.es_pairs", f"must be >= 1 (got {m.es_pairs})")
    _check(m.hint_weight >= 0 and math.isfinite(m.hint_weight), "meta.hint_weight",
           f"must be a number >= 0 (got {m.hint_weight})")
    _check(0 < m.be_threshold, "meta.be_threshold", f"must be > 0 (got {m.be_threshold})")


def _check_schedule_and_bounds(c: ExperimentConfig) -> None:
    """Logging periods, the batch-entropy term's need for a hidden layer, and the size bounds."""
    o, lc, t, m, v = c.optimizee, c.learner, c.task, c.meta, c.validation
    _check(v.every >= 1, "validation.every", f"must be >= 1 (got {v.every})")
    _check(v.n_runs >= 1, "validation.n_runs", f"must be >= 1 (got {v.n_runs})")
    _check(c.log_every >= 1, "log_every", f"must be >= 1 (got {c.log_every})")
    _check(c.snapshot_every >= 0, "snapshot_every", f"must be >= 0 (got {c.snapshot_every})")
    _check(c.checkpoint_every >= 1, "checkpoint_every", f"must be >= 1 (got {c.checkpoint_every})")
    _check(len(o.sizes) >= 3 or m.batch_entropy is False, "meta.batch_entropy",
           "needs at least one hidden (activation) layer")
    for name, value in _sizes(c):
        limit = MAX_SIZES[name.split("[")[0]]
        _check(value <= limit, name, f"must be <= {limit:,} (got {value:,}): larger than any setting this "
                                     "library is built or tested for")
    need = step_bytes(c)
    _check(need <= MAX_STEP_BYTES, "learner.hidden",
           f"with task.batch_size {t.batch_size}, optimizee.sizes {list(o.sizes)}, learner.hidden {lc.hidden} and "
           f"meta.K {m.K}, one outer step would hold about {need / 2**30:,.0f} GiB (the limit is "
           f"{MAX_STEP_BYTES / 2**30:,.0f} GiB): make them smaller")


# Upper bounds of every size field, checked at validation (the thesis' settings are far below them).
MAX_SIZES = {"optimizee.sizes": 100_000, "learner.message_size": 1_024, "learner.hidden": 8_192,
             "task.batch_size": 65_536, "task.subset": 60_000, "meta.K": 100_000, "meta.T": 10_000_000,
             "meta.S": 100_000_000, "meta.es_pairs": 4_096, "validation.n_runs": 10_000,
             "validation.every": 100_000_000, "log_every": 100_000_000, "snapshot_every": 100_000_000,
             "checkpoint_every": 100_000_000}
MAX_STEP_BYTES = 64 * 2**30


def _sizes(c) -> list[tuple[str, int]]:
    o, lc, t, m, v = c.optimizee, c.learner, c.task, c.meta, c.validation
    return ([(f"optimizee.sizes[{i}]", n) for i, n in enumerate(o.sizes)]
            + [("learner.message_size", lc.message_size), ("learner.hidden", lc.hidden),
               ("task.batch_size", t.batch_size), ("task.subset", t.subset), ("meta.K", m.K), ("meta.T", m.T),
               ("meta.S", m.S), ("meta.es_pairs", m.es_pairs), ("validation.n_runs", v.n_runs),
               ("validation.every", v.every), ("log_every", c.log_every), ("snapshot_every", c.snapshot_every),
               ("checkpoint_every", c.checkpoint_every)])


def step_bytes(c) -> int:
    """A bound on what one outer step holds for its reverse pass (float32): the update learner's
    broadcast layer, batch x inputs x outputs x hidden per layer, over K inner steps and every
    ES particle (the dense reference materialises it; the fast engine holds less)."""
    o, lc, t, m = c.optimizee, c.learner, c.task, c.meta
    widest = max((a + 1) * b for a, b in zip(o.sizes[:-1], o.sizes[1:]))
    particles = 2 * m.es_pairs + 1 if m.estimator != "tbptt" else 1
    return 4 * t.batch_size * widest * max(lc.hidden, lc.message_size) * m.K * particles


MAX_SEED = 2**62     # seeds are offset by a few million for the separate generators (trainer.init_state)


def _floats(c) -> list[tuple[str, float]]:
    """Every float value of a config (tuples included), with its dotted name."""
    out = []
    for f in dataclasses.fields(c):
        v, name = getattr(c, f.name), f.name
        if dataclasses.is_dataclass(v):
            out += [(f"{name}.{n}", x) for n, x in _floats(v)]
        elif isinstance(v, float):
            out.append((name, v))
        elif isinstance(v, tuple):
            out += [(f"{name}[{i}]", x) for i, x in enumerate(v) if isinstance(x, float)]
    return out


def from_dict(data: dict) -> ExperimentConfig:
    """Build and validate an ``ExperimentConfig`` from plain data (e.g. parsed YAML)."""
    return validate(_build(ExperimentConfig, data, ""))


MAX_YAML_BYTES = 1_000_000       # a config or profile is a few hundred bytes; anything this large is not one


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """A safe YAML loader (libyaml's when PyYAML has it: configs are read for every stored run)
    that refuses a mapping with a key given twice (YAML keeps the last, silently)."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(text: str):
    """YAML data from a config or profile: safe types only, no key twice, no oversized or alias-heavy
    document (``yaml.YAMLError`` otherwise)."""
    if len(text) > MAX_YAML_BYTES:
        raise yaml.YAMLError(f"{len(text):,} bytes: larger than any config ({MAX_YAML_BYTES:,})")
    if text.count("*") > 1000:     # alias bombs: many references to anchors
        raise yaml.YAMLError("too many aliases")
    return yaml.load(text, Loader=_UniqueKeyLoader)


def load(path: str | Path) -> ExperimentConfig:
    """Load and validate a YAML experiment file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    return parse(p.read_text(), p)


def parse(text: str, source: str | Path) -> ExperimentConfig:
    """Validate the YAML experiment ``text`` read from ``source`` (named in errors)."""
    p = source
    try:
        data = read_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        raise ConfigError(f"{p} is empty: an experiment config needs at least its fields that differ from the "
                          "defaults (see mplp/configs/)")
    return from_dict(data)


def shipped(name: str) -> ExperimentConfig:
    """One of the configs shipped with the package, ``mplp/configs/<name>.yaml``."""
    return load(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")


def dump(c: ExperimentConfig) -> str:
    """YAML text of a config (round-trips through ``load``)."""
    return yaml.safe_dump(c.to_dict(), sort_keys=False)
