"""The sampler's Exp(1) noise: ATen's serial `exponential_` against `gpgrl.rollout.sampling.exponential_noise`.

    .venv/bin/python benchmarks/exponential_draw.py [--shapes 48x512,48x49152] [--repeats 300] [--draws 50000000]

For each [rows, V] shape (48 × 512: tiny-random's decode batch; 48 × 49152: SmolLM2's) the median time of one draw
each way, interleaved; then how many of `--draws` float32 draws differ between the two from the same seed (the
claim is none: the same uniforms, a vectorised log1p within one float64 ulp, absorbed by the cast to float32).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, write_json  # noqa: E402

from gpgrl.rollout.sampling import exponential_noise  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def time_shape(rows: int, vocab: int, repeats: int) -> dict[str, float]:
    like = torch.empty(1)
    aten = lambda: like.new_empty(rows, vocab).exponential_()  # noqa: E731
    ours = lambda: exponential_noise(rows, vocab, like)  # noqa: E731
    timed(aten, 20), timed(ours, 20)  # warm-up
    times: dict[str, list[float]] = {"aten_ms": [], "vectorised_ms": []}
    for _ in range(repeats):  # interleaved, so drifts of a loaded machine hit both
        times["aten_ms"] += timed(aten, 1)
        times["vectorised_ms"] += timed(ours, 1)
    row = {k: 1e3 * median(v) for k, v in times.items()}
    row["speedup"] = row["aten_ms"] / row["vectorised_ms"]
    return row


def mismatches(draws: int, chunk: int = 5_000_000) -> int:
    bad = 0
    for seed in range(0, draws, chunk):
        n = min(chunk, draws - seed)
        torch.manual_seed(seed)
        want = torch.empty(1, n).exponential_()
        torch.manual_seed(seed)
        bad += int((exponential_noise(1, n, torch.empty(1)) != want).sum())
    return bad


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="48x512,48x49152", help="rows x vocab, comma-separated")
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--draws", type=int, default=50_000_000)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    results = {}
    for shape in args.shapes.split(","):
        rows, vocab = (int(x) for x in shape.split("x"))
        results[shape] = time_shape(rows, vocab, args.repeats)
        r = results[shape]
        print(f"{shape:>10}: exponential_ {r['aten_ms']:.3f} ms, exponential_noise {r['vectorised_ms']:.3f} ms "
              f"({r['speedup']:.2f}x)", flush=True)
    bad = mismatches(args.draws)
    write_json(args.out, {"args": vars(args), "machine": machine(), "shapes": results, "draws": args.draws,
                          "mismatches": bad})
    print(f"mismatches={bad} of {args.draws} float32 draws")


if __name__ == "__main__":
    main()
