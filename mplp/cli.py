"""mplp: meta-train MPLP learned optimizers and re-run the chapters of the MPLP reproducibility book.

Commands: train (one experiment config), run (book chapters, into a run folder or
--in-place), sweep (every run a chapter's profile needs, as jobs), bench (outer-step
timings), costs (what the stored runs cost).  Errors in the input (a bad config value or
parameter, an unknown device, missing data, an unfinished run without --resume, a damaged
or locked run directory) are reported in one line naming the problem, exit status 2; a run
that diverged ends with exit status 1.  Modules are imported per command, so --help is quick.
"""

from __future__ import annotations

import argparse
import sys

DTYPES = {"float32", "float64"}


def _train(args) -> int:
    import numpy as np
    import torch
    import yaml

    from mplp.core import config
    from mplp.core.backward import dense_backward
    from mplp.core.fast import fast_backward
    from mplp.meta.loop import DIVERGED_SKIP_FRACTION, train_population

    from mplp.store import check_writable
    cfg = config.load(args.config)
    changes = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise config.ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. meta.S=20000")
        try:
            changes[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise config.ConfigError(f"--set {item!r}: the value is not valid YAML ({first})") from None
    if args.steps is not None:
        changes["meta.S"] = args.steps
    if changes:
        cfg = cfg.replace(**changes)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is not None:
        check_writable(args.out)
    if args.resume and args.restart:
        raise ValueError("--resume and --restart exclude each other: continue the stored run or discard it")
    cfgs = [cfg.replace(seed=s) for s in args.seeds] if args.seeds else [cfg]
    backward = dense_backward if args.backward == "dense" else fast_backward
    extend = None
    if args.extend_from:
        if len(cfgs) > 1:
            raise ValueError("--extend-from continues one run; give no --seeds")
        extend = [args.extend_from]
    runs = train_population(cfgs, args.out, resume=args.resume, device=args.device,
                            dtype=getattr(torch, args.dtype), backward=backward, progress=not args.no_progress,
                            restart=args.restart, extend_from=extend)
    diverged = 0
    for run in runs:
        v = run.validation
        first, last = v["val_loss"][0], v["val_loss"][-1]
        status = run.meta["status"]
        diverged += status == "diverged"
        print(f"{run.path}: {status} after {run.meta['steps_done']} outer steps "
              f"({run.meta['wall_time_s']:.0f} s); validation outer-loss {first:.4g} -> {last:.4g} "
              f"(best {np.nanmin(v['val_loss']) if np.isfinite(v['val_loss']).any() else float('nan'):.4g}); "
              f"outer updates skipped (non-finite meta-gradient): {run.meta.get('skipped_outer_updates', 0)}")
    if diverged:
        print(f"mplp train: {diverged} of {len(runs)} run(s) diverged (a non-finite validation, or more than "
              f"{DIVERGED_SKIP_FRACTION:.0%} of the outer updates skipped)", file=sys.stderr)
        return 1
    return 0


def _key_values(items: list[str], flag: str, example: str) -> dict:
    """``NAME=VALUE`` arguments as a dict, each value read as YAML (``3``, ``0.1``, ``[1, 2]``, ``text``)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r}: expected NAME=VALUE, e.g. {flag} {example}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"{flag} {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return out


def _run(args) -> int:
    from mplp.book.runner import run

    overrides = _key_values(args.param, "-p", "seed=3")
    paths = run(args.chapters, args.profile, args.device, not args.no_progress, overrides, args.in_place,
                args.out, args.results, args.check)
    for path in paths:
        print(f"executed {path}")
    if args.check:
        print("profile and parameters are valid; nothing was run")
    return 0


def _bench(args) -> int:
    import torch

    from mplp.bench import format_result, run_bench, to_json, train_throughput

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.throughput:
        r = train_throughput(args.config, args.population, args.throughput)
    else:
        r = run_bench(args.config, args.population, args.steps, args.device)
    print(format_result(r))
    if args.json:
        print(to_json(r))
    return 0


def _threads(text: str) -> int:
    """--threads: a positive integer (0: torch's default)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of threads, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or 0 for torch's default), got {n}")
    return n


def _costs(args) -> int:
    from mplp.book import report
    from mplp.paths import PROFILES

    if args.profile not in PROFILES:
        raise ValueError(f"unknown profile {args.profile!r}; valid profiles: {', '.join(PROFILES)}")
    if args.write:
        from mplp.book import readme

        for path in readme.write(args.profile):
            print(f"wrote {path}")
    else:
        print(report.costs_markdown(report.run_costs(args.profile), args.profile))
    return 0


def _sweep(args) -> int:
    from mplp import sweep

    pops = sweep.plan(args.chapter, args.profile)
    if args.status:
        rows = sweep.status(pops, args.out)
    elif args.executor == "ray":
        rows = sweep.run_ray(pops, args.out, args.max_parallel, args.device, args.threads, args.address)
    elif args.executor == "slurm":
        rows = sweep.run_slurm(pops, args.out, args.max_parallel, args.device, args.threads)
    else:
        rows = sweep.run_local(pops, args.out, args.max_parallel, args.device, args.threads)
    for r in rows:
        extra = f"  log: {r.log}" if r.state == "failed" and r.log else ""
        print(f"{r.state:9s} {r.steps_done:>7,} / {r.steps_total:,}  {r.run}{extra}")
    return 1 if any(r.state in ("failed", "interrupted", "damaged") for r in rows) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mplp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_train_parser, _run_parser, _bench_parser, _sweep_parser, _costs_parser):
        add(sub)
    return p


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="meta-train one experiment config")
    t.add_argument("config", help="experiment YAML (see mplp/configs/)")
    t.add_argument("--out", default=None, help="results root (default: the repository's results/)")
    t.add_argument("--resume", action="store_true", help="continue an unfinished run from its checkpoint")
    t.add_argument("--restart", action="store_true",
                   help="discard what is stored for this config (finished, unfinished or damaged) and start over")
    t.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    t.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    t.add_argument("--steps", type=int, default=None, help="override meta.S")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field by its dotted path, e.g. --set learner.message_size=1")
    t.add_argument("--threads", type=_threads, default=0, help="torch CPU threads (default: torch's)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train these seeds of the config as one batched population")
    t.add_argument("--extend-from", default=None, metavar="RUN_DIR",
                   help="continue a finished shorter run of the same config (only meta.S differs, e.g. with "
                        "--steps) from its final state, as if it had never stopped")
    t.add_argument("--backward", choices=("fast", "dense"), default="fast",
                   help="message-passing backward: fast (default) or the dense reference")
    t.set_defaults(func=_train)


def _run_parser(sub) -> None:
    r = sub.add_parser("run", help="execute book chapters with papermill, into a run folder (the book untouched)",
                       description="Execute book chapters with a profile and parameter overrides into a run folder "
                                   "(default _build/runs/<chapters>-<profile>-<time>/) whose results store reads the "
                                   "committed results first; --in-place refreshes the committed book and results/.")
    r.add_argument("chapters", nargs="*", help="chapters to run (default: all); e.g. sgd sinewave")
    r.add_argument("--profile", default="cpu", help="ci, cpu or paper (default: cpu)")
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a notebook parameter (checked against the notebook's parameters cell), e.g. -p seed=3")
    r.add_argument("--device", default=None, help="cpu or cuda (default: the profile's)")
    r.add_argument("--out", default=None, help="the run folder (default: _build/runs/<chapters>-<profile>-<time>/)")
    r.add_argument("--results", default=None,
                   help="the run's results store (default: <run folder>/results, reading results/ first)")
    r.add_argument("--in-place", action="store_true",
                   help="execute the book's own notebooks and store into results/ (what the published book shows)")
    r.add_argument("--check", action="store_true", help="only check the profile and the -p parameters; run nothing")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_run)


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="time outer steps: fast path vs dense reference")
    b.add_argument("--config", default="sinewave", help="sinewave (Table 3), ablation (Table 4) or mnist (Table 5)")
    b.add_argument("--population", type=int, default=1, help="members run as one batched program")
    b.add_argument("--steps", type=int, default=20, help="timed outer steps of the fast path (median)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--threads", type=_threads, default=0, help="torch CPU threads (default: torch's)")
    b.add_argument("--throughput", type=int, default=0, metavar="N",
                   help="instead: train the population for N outer steps as the long runs do (validation "
                        "included) and report outer steps per hour")
    b.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    b.set_defaults(func=_bench)


def _sweep_parser(sub) -> None:
    w = sub.add_parser("sweep", help="train every run a chapter's profile needs, as jobs (skips what is stored)")
    w.add_argument("chapter", help="sinewave, ablation, mnist, truncation or report")
    w.add_argument("--profile", default="cpu", help="ci, cpu or paper (default: cpu)")
    w.add_argument("--executor", default="local", choices=("local", "ray", "slurm"))
    w.add_argument("--max-parallel", type=int, default=1, help="jobs running at once (default 1)")
    w.add_argument("--status", action="store_true", help="only show each run's state: queued, running, interrupted, "
                   "complete, diverged, damaged or failed")
    w.add_argument("--out", default=None, help="results root (default: the repository's results/)")
    w.add_argument("--device", default="cpu")
    w.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    w.add_argument("--address", default=None, help="a running Ray cluster (default: start a local one)")
    w.set_defaults(func=_sweep)


def _costs_parser(sub) -> None:
    c = sub.add_parser("costs", help="outer steps and wall time per run of a profile's stored runs")
    c.add_argument("--profile", default="cpu", help="ci, cpu or paper (default: cpu)")
    c.add_argument("--write", action="store_true", help="write the generated blocks from the committed results: the "
                   "ledger's bottom line and figure (README.md, book/images/ledger.png), the cost table (CONTRIBUTING.md)")
    c.set_defaults(func=_costs)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mplp")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)          # --help and --version end here, before torch is imported
    from mplp.core.config import ConfigError
    from mplp.store import StoreError
    from mplp.tasks.data import MNISTUnavailableError

    try:
        return args.func(args)
    except (ConfigError, MNISTUnavailableError, StoreError, ValueError, FileNotFoundError) as e:   # ProfileError too
        print(f"mplp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mplp {args.command}: interrupted; checkpoint written, continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
