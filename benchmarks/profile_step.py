"""Where an outer step's time goes on the engine: ``python benchmarks/profile_step.py CONFIG [P]``.

Profiles 10 outer steps (after warm-up) with torch.profiler and inductor's per-kernel
records and splits the wall time into arithmetic (the C++ reduce kernels, inductor's
generated kernels, the extern matrix products) and the rest (Python, the graphs' wrappers,
allocation, the autograd engine): the arithmetic is the floor this engine can approach.
"""

import sys
import time

import torch
import torch._inductor.config as inductor_config

inductor_config.cpp.enable_kernel_profile = True

from mplp import bench  # noqa: E402
from mplp.core.fast import fast_backward  # noqa: E402


def main(name="sinewave", P=1, n=10):
    spec, s, batched, _ = bench.problem(name, P)
    step = lambda: bench.outer_grad(spec, s, *batched, fast_backward)
    for _ in range(5):
        step()
    from torch.profiler import profile

    with profile() as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        wall = (time.perf_counter() - t0) / n * 1e3
    groups = {"reduce kernels (mplp::)": 0.0, "inductor kernels": 0.0, "matrix products (aten::mm/bmm/addmm)": 0.0}
    for e in prof.key_averages():
        us = e.self_cpu_time_total / n / 1e3
        if e.key.startswith("mplp::"):
            groups["reduce kernels (mplp::)"] += us
        elif e.key.startswith("graph_") and "cpp_fused" in e.key:
            groups["inductor kernels"] += us
        elif e.key in ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"):
            groups["matrix products (aten::mm/bmm/addmm)"] += us
    arith = sum(groups.values())
    print(f"{name} P={P}, {torch.get_num_threads()} threads: {wall:.1f} ms per outer step (profiled)")
    for k, v in groups.items():
        print(f"  {k:40s} {v:6.1f} ms")
    print(f"  {'arithmetic (sum)':40s} {arith:6.1f} ms")
    print(f"  {'the rest (overhead)':40s} {wall - arith:6.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sinewave", int(sys.argv[2]) if len(sys.argv) > 2 else 1)
