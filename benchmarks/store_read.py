"""Store reads: the read-only chapter studies the report builds (configs, manifests, curves,
stored tensors), timed three times at one thread.  Run from the repository root; pass another
checkout's path first to time that code on this checkout's results (a checkout of the same
layout; for one from before ``mplp.book`` existed, run its own copy of this script from it):

    python benchmarks/store_read.py            # this checkout
    python benchmarks/store_read.py ../old     # another checkout's code, these results
"""

import os
import sys
import time
from pathlib import Path

results = Path.cwd() / "results"
code = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path.cwd()
sys.path.insert(0, str(code))

import torch  # noqa: E402

torch.set_num_threads(1)
from mplp.book import report  # noqa: E402

times = []
for _ in range(3):
    t = time.perf_counter()
    for chapter in ("sinewave", "ablation", "mnist"):
        report.chapter_study(chapter, "cpu", results)
    times.append(time.perf_counter() - t)
print(f"{code}: chapter studies read-only {' '.join(f'{x:.2f}' for x in times)} s (best {min(times):.2f})")
