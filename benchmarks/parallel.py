"""Peak memory per process and step time of the parallel strategies (ddp, fsdp2, zero2, zero3) on N processes.

Each strategy trains the same run (`torchrun --nproc_per_node N -m gpgrl train ...`, one thread per process) for
`--steps` steps with the hash reward (no degenerate groups: every sample trains) and forced completion lengths,
so every strategy does the same work; the runs go one at a time, in the order given. Each process writes its own
peak RSS (VmHWM) when the run ends: it includes loading the whole model before sharding, the whole parameters
gathered for each rollout round, and (main process) the final model assembled for final/. Step times are the
median over the steps after the first.

    .venv/bin/python benchmarks/parallel.py --model smollm2-135m-instruct --strategies ddp,fsdp2,zero3 \
        --out benchmarks/results/parallel_smollm2.json

The last line is one `strategy=...: rss_max_mib=... step_s=...` summary per strategy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, write_json  # noqa: E402

REWARD_FILE = Path(__file__).resolve().parent / "bench_rewards.py"
WORKER = Path(__file__).resolve()


def run_args(model: str, out: Path, steps: int, strategy: str, tokens: int) -> list[str]:
    return ["train", f"model.name={model}", f"train.output_dir={out}", f"train.max_steps={steps}",
            f"parallel.strategy={strategy}", "rollout.prompts_per_step=4", "rollout.generations_per_prompt=4",
            f"rollout.max_new_tokens={tokens}", f"rollout.min_new_tokens={tokens}", "rollout.micro_batch_size=8",
            "rollout.generation_batch_size=16", "rollout.temperature=1.0", "algorithm.beta_th=0",
            f"reward.functions={REWARD_FILE}:varied", "reward.weights=[1.0]", "eval.before=false",
            "eval.after=false", "logging.progress=false", "logging.tensorboard=false", "train.save_every=0"]


def worker(memory_dir: str, args: list[str]) -> int:
    """One process of a run: train, then record this process's peak RSS."""
    from _common import peak_rss_mb

    from gpgrl.cli import main

    code = main(args)
    rank = os.environ.get("RANK", "0")
    Path(memory_dir, f"rank{rank}.json").write_text(json.dumps({"rank": int(rank), "peak_rss_mib": peak_rss_mb()}))
    return code


def measure(strategy: str, model: str, processes: int, steps: int, tokens: int, scratch: Path) -> dict:
    out, memory = scratch / strategy, scratch / f"{strategy}-memory"
    memory.mkdir(parents=True)
    launcher = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(processes),
                "--master_port", str(29700 + len(list(scratch.iterdir())))]
    cmd = [*launcher, str(WORKER), "--worker", str(memory), *run_args(model, out, steps, strategy, tokens)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise SystemExit(f"{strategy} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    later = metrics[1:] or metrics
    ranks = sorted((json.loads(p.read_text()) for p in memory.glob("rank*.json")), key=lambda r: r["rank"])
    return {"strategy": strategy, "processes": processes, "steps": len(metrics),
            "peak_rss_mib": [round(r["peak_rss_mib"]) for r in ranks],
            "step_s": median([m["step_time_s"] for m in later]),
            "generate_s": median([m["time_generate_s"] for m in later]),
            "train_s": median([m["time_train_s"] for m in later]),
            "tokens": [m["tokens"] for m in metrics], "loss": [m["loss"] for m in metrics]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--strategies", default="ddp,fsdp2,zero3")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens (forced) per sample")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpgrl-parallel-") as tmp:
        for strategy in args.strategies.split(","):
            rows.append(measure(strategy, args.model, args.processes, args.steps, args.tokens, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    write_json(args.out, {"machine": machine(), "args": vars(args), "results": rows})
    print(" ".join(f"strategy={r['strategy']}: rss_max_mib={max(r['peak_rss_mib'])} step_s={r['step_s']:.2f}"
                   for r in rows))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        raise SystemExit(worker(sys.argv[2], sys.argv[3:]))
    main()
