"""Print the benchmark tables of benchmarks/README.md from the measurement files:
``python benchmarks/table.py`` (the latest engine measurement per setting)."""

import json
from pathlib import Path

HERE = Path(__file__).parent


def _latest(path: Path, key) -> list[dict]:
    rows = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "engine" in r:                       # measurements of the current engine
            rows[key(r)] = r
    return list(rows.values())


def bench_table() -> str:
    out = ["| config | P | threads | fast ms/step | per run | dense ms/step | speedup | meta-grad rel. error | "
           "first call s (compiles) | peak RSS fast / dense (MB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = _latest(HERE / "cpu.jsonl", lambda r: (r["config"], r["population"], r["threads"]))
    ones = {(r["config"], r["threads"]): r["fast_ms_per_step"] for r in rows if r["population"] == 1}
    for r in rows:
        P, one = r["population"], ones.get((r["config"], r["threads"]))
        per = f"{r['fast_ms_per_step'] / one:.2f}x one run" if P > 1 and one else "-"
        out.append(f"| {r['config']} | {P} | {r['threads']} | {r['fast_ms_per_step']:.1f} | {per} | "
                   f"{r['reference_ms_per_step']:.1f} | {r['speedup']} | {r['rel_error']:.1e} | {r['compile_s']} | "
                   f"{r['fast_peak_mem_mb']:.0f} / {r['reference_peak_mem_mb']:.0f} |")
    return "\n".join(out)


def throughput_table() -> str:
    out = ["| setting | P | threads | outer steps / hour (population) | run-steps / hour | s for the timed steps |",
           "|---|---|---|---|---|---|"]
    for r in _latest(HERE / "throughput.jsonl", lambda r: (r["config"], r["population"], r["threads"])):
        out.append(f"| {r['config']} | {r['population']} | {r['threads']} | {r['population_steps_per_hour']:,} | "
                   f"{r['run_steps_per_hour']:,} | {r['seconds']} ({r['steps']} steps) |")
    return "\n".join(out)


if __name__ == "__main__":
    print(bench_table())
    print()
    if (HERE / "throughput.jsonl").exists():
        print(throughput_table())
