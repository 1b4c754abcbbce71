"""AdamW step time on a model's parameters: the per-tensor loop (torch's CPU default), foreach and fused.

gpgrl's trainer uses `fused=True` (TRL's default optimizer is fused AdamW too). Variants alternate; the median
of `--repeats` steps each is reported, with the gradient-clipping time for reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, write_json  # noqa: E402

VARIANTS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main(argv: list[str] | None = None) -> None:
    from gpgrl.config import ModelConfig
    from gpgrl.models import load_policy

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    model, _ = load_policy(ModelConfig(name=args.model), 0)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = {k: torch.optim.AdamW(params, lr=1e-6, betas=(0.9, 0.99), **kw) for k, kw in VARIANTS.items()}
    times: dict[str, list[float]] = {k: [] for k in [*VARIANTS, "clip_grad_norm"]}
    for r in range(args.repeats + 1):  # repeat 0 creates the optimizer state
        for k, opt in optimizers.items():
            start = time.perf_counter()
            opt.step()
            if r:
                times[k].append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        times["clip_grad_norm"].append(time.perf_counter() - start)
    summary = {k: median(v) for k, v in times.items()}
    n = sum(p.numel() for p in params)
    print(f"{args.model}: {n / 1e6:.1f} M parameters; {machine()['cpu']}")
    for k, v in summary.items():
        print(f"{k:<15} {v:7.3f} s")
    write_json(args.out, {"args": vars(args), "machine": machine(), "summary_s": summary, "times": times})


if __name__ == "__main__":
    main()
