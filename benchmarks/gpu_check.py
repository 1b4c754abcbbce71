"""GPU figures in one table: generation tokens/s of gpgrl's HF sampler against vLLM, and a training step's time and
peak GPU memory with each engine, for the default model and a 0.5-1.5B model when one is in the Hugging Face cache.

Run through `benchmarks/gpu_check.sh` (unattended, under 10 minutes on one GPU). Generation: the same chat-templated
prompts, G completions each, exactly `--tokens` new tokens per completion (EOS masked / ignored), bf16, after one
warm-up call; vLLM colocated in this process as `rollout.engine=vllm` runs it. Training: `gpgrl train` for
`--steps` steps (median after the first) with model.dtype=bfloat16 and each engine. A part that cannot run (vLLM
not installed, out of time) is reported as such in the table, never silently dropped. `--allow-cpu` runs the same
on CPU (used by the tests, on the tiny model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import machine, median, write_json  # noqa: E402

REWARD_FILE = Path(__file__).resolve().parent / "bench_rewards.py"
SMALL_MODELS = ("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-0.5B-Instruct")
QUESTIONS = [f"What is {a} * {a + 8} + {2 * a + 8}? Explain each step." for a in range(3, 40)]


def cached_small_model() -> str | None:
    """The first of SMALL_MODELS whose config is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    for repo in SMALL_MODELS:
        if isinstance(try_to_load_from_cache(repo, "config.json"), str):
            return repo
    return None


def hf_tokens_per_s(name: str, prompts: int, g: int, tokens: int, dtype: str) -> float:
    from gpgrl.config import ModelConfig
    from gpgrl.data import Example
    from gpgrl.models import load_policy
    from gpgrl.rollout import SamplingParams, make_encoder
    from gpgrl.rollout.sampling import generate

    model, tokenizer = load_policy(ModelConfig(name=name, dtype=dtype), 0)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    encoder = make_encoder(tokenizer, model, "", "{question}")
    encoded = [encoder.encode(Example(question=q, answer="")) for q in QUESTIONS[:prompts]]
    params = SamplingParams(tokens, 1.0, batch_size=prompts * g, min_new_tokens=tokens, shared_prefill=True)
    generate(model, encoder, encoded[:2], g, params)  # warm-up
    sync()
    start = time.perf_counter()
    groups = generate(model, encoder, encoded, g, params)
    sync()
    elapsed = time.perf_counter() - start
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return sum(s.length for group in groups for s in group) / elapsed


def vllm_tokens_per_s(name: str, prompts: int, g: int, tokens: int, dtype: str) -> float | str:
    try:
        from gpgrl.rollout.vllm_engine import import_vllm

        vllm = import_vllm()
    except Exception as err:  # noqa: BLE001 - reported in the table
        return f"not run: {str(err).split(':')[0]}"
    from gpgrl.config import ModelConfig
    from gpgrl.models import load_tokenizer, resolve_model_source

    source = resolve_model_source(ModelConfig(name=name))
    tokenizer = load_tokenizer(source)
    llm = vllm.LLM(model=source, dtype=dtype, max_model_len=1024, gpu_memory_utilization=0.5, seed=0,
                   enforce_eager=not torch.cuda.is_available())
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
           for q in QUESTIONS[:prompts]]
    requests = [{"prompt_token_ids": list(i if isinstance(i, list) else i["input_ids"])} for i in ids]
    params = vllm.SamplingParams(n=g, temperature=1.0, max_tokens=tokens, ignore_eos=True, seed=0)
    llm.generate(requests[:2], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = llm.generate(requests, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    count = sum(len(c.token_ids) for out in outputs for c in out.outputs)
    del llm
    return count / elapsed


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train_step(name: str, engine: str, steps: int, tokens: int, dtype: str, scratch: Path) -> dict | str:
    out = scratch / f"{name.replace('/', '_')}-{engine}"
    args = ["train", f"model.name={name}", f"model.dtype={dtype}", f"train.output_dir={out}",
            f"train.max_steps={steps}", f"rollout.engine={engine}", "rollout.prompts_per_step=8",
            "rollout.generations_per_prompt=8", f"rollout.max_new_tokens={tokens}", "rollout.micro_batch_size=16",
            "rollout.generation_batch_size=64", "algorithm.beta_th=0", f"reward.functions={REWARD_FILE}:varied",
            "reward.weights=[1.0]", "eval.before=false", "eval.after=false", "logging.progress=false",
            "logging.tensorboard=false", "train.save_every=0", "data.train_size=64"]
    result = subprocess.run([sys.executable, "-m", "gpgrl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        return "failed: " + (result.stderr.strip().splitlines() or ["?"])[-1][:80]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    later = metrics[1:] or metrics
    return {"step_s": median([m["step_time_s"] for m in later]),
            "peak_memory_mib": max(m["peak_memory_mib"] for m in metrics)}


def measure(name: str, args: argparse.Namespace, deadline: float, scratch: Path) -> list[dict]:
    rows = []
    for engine in ("hf", "vllm"):
        row = {"model": name, "engine": engine}
        if time.time() > deadline:
            row.update(tokens_per_s="not run: out of time", step="not run: out of time")
        else:
            measure_speed = hf_tokens_per_s if engine == "hf" else vllm_tokens_per_s
            row["tokens_per_s"] = measure_speed(name, args.prompts, args.g, args.tokens, args.dtype)
            skip = isinstance(row["tokens_per_s"], str) or time.time() > deadline
            row["step"] = "not run" if skip else train_step(name, engine, args.steps, args.tokens, args.dtype,
                                                            scratch)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def cell(value: object, unit: str = "") -> str:
    return f"{value:,.0f}{unit}" if isinstance(value, (int, float)) else str(value)


def table(rows: list[dict]) -> str:
    lines = ["| model | engine | generation tokens/s | step s | peak memory MiB |", "|---|---|---|---|---|"]
    for r in rows:
        step = r["step"]
        s, mem = (f"{step['step_s']:.2f}", cell(step["peak_memory_mib"])) if isinstance(step, dict) else (step, "")
        lines.append(f"| {r['model']} | {r['engine']} | {cell(r['tokens_per_s'])} | {s} | {mem} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated; default: smollm2 + a cached 0.5-1.5B")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--g", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--budget-s", type=float, default=540)
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not (torch.cuda.is_available() or args.allow_cpu):
        raise SystemExit("no GPU visible: gpu_check measures GPU figures (--allow-cpu to run it on CPU anyway)")
    deadline = time.time() + args.budget_s
    models = [m for m in args.models.split(",") if m] or \
        ["smollm2-135m-instruct", *([small] if (small := cached_small_model()) else [])]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpgrl-gpu-check-") as tmp:
        for name in models:
            rows += measure(name, args, deadline, Path(tmp))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    write_json(args.out, {"machine": {**machine(), "device": device}, "args": vars(args), "rows": rows})
    memory = "GPU allocated" if torch.cuda.is_available() else "resident set, trainer and engine"
    print(f"device: {device}, {args.prompts} prompts x G {args.g} x {args.tokens} tokens, {args.dtype}; peak memory: "
          f"{memory}")
    print(table(rows))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
