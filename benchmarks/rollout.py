"""Generation throughput: gpgrl's rollout paths against plain `model.generate`, at the same batch and lengths.

Variants, alternated in a rotating order within one process, each repeat with the same seed and prompts:

  hf_generate         model.generate(num_return_sequences=G): what TRL and gpgrl's plain path call
  gpgrl               gpgrl.rollout.generate, plain path (HF generate in chunks, plus EOS cutting and decoding)
  gpgrl_prefill       gpgrl.rollout.generate with shared_prefill (each prompt encoded once, KV cache copied G times)
  gpgrl_prefill_bf16  as gpgrl_prefill under bf16 autocast (LM head in fp32)
  gpgrl_prefill_grown as gpgrl_prefill with the KV cache grown by concatenation at every decode step (HF's
                      DynamicLayer, before the preallocated cache); not in the default list
  gpgrl_prefill_whole as gpgrl_prefill with every prompt prefilled whole (before the shared system-prompt
                      head, `gpgrl.rollout.prefill`); not in the default list
  gpgrl_prefill_aten_draw  as gpgrl_prefill with the multinomial's exponential noise drawn by ATen's serial
                      `exponential_` (the same numbers, before `exponential_noise`); not in the default list
  gpgrl_prefill_untrimmed  as gpgrl_prefill_aten_draw, also decoding under no_grad instead of inference mode and
                      with HF's 2-D mask, rebuilt in 4-D at every step (before the per-call trims of issue 13);
                      not in the default list
  gpgrl_prefill_hf_step  as gpgrl_prefill with every decode step the model's own forward (before the fused
                      decode step of Llama/Qwen2 models, `gpgrl.rollout.decode_step`); not in the default list
  hf_generate_static  hf_generate with a static KV cache (`cache_implementation="static"`); not in the default list
  hf_generate_static_compiled  the same with HF's compiled decode forward (torch.compile, inductor, on the CPU);
                      the first call compiles (the warm-up repeat); not in the default list

With `--lengths forced` (default) every completion has exactly max new tokens (min_new_tokens); with `natural`,
completions stop at EOS, and the fp32 variants still generate identical tokens (same seed), so the work is equal.
Reports the median time and completion tokens/s per variant, and the ratio to hf_generate. Then the roofline
(`benchmarks/roofline.py`): this machine's matmul rate on the model's own shapes at the decode batch (and at
the prefill's rows) and its memory bandwidth, the FLOPs and bytes of the least prefill (the prompts' shared head
once, then each prompt's own tokens) and of every decode step, and `roofline_fraction=X` (last line) = the
roofline time of the whole generation over the measured time of the default sampler (gpgrl_prefill), on the last
repeat's prompts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_prompts, machine, median, write_json  # noqa: E402
from roofline import decode_step, forward_flops, limits, roofline_seconds, weight_count  # noqa: E402

VARIANTS = ("hf_generate", "gpgrl", "gpgrl_prefill", "gpgrl_prefill_bf16")
EXTRA_VARIANTS = ("gpgrl_prefill_grown", "gpgrl_prefill_whole", "gpgrl_prefill_aten_draw",
                  "gpgrl_prefill_untrimmed", "gpgrl_prefill_hf_step", "hf_generate_static",
                  "hf_generate_static_compiled")


def hf_generate(model, tokenizer, prompts: list[str], args: argparse.Namespace, **extra) -> int:
    """Plain HF generate on the whole batch; returns the number of completion tokens (up to the first EOS)."""
    from gpgrl.rollout import completion_lengths, eos_token_ids

    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = eos_token_ids(model, tokenizer)
    out = model.generate(**enc, **extra, do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0,
                         max_new_tokens=args.max_new_tokens, num_return_sequences=args.generations,
                         min_new_tokens=args.max_new_tokens if args.lengths == "forced" else 0,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos))
    lengths, _ = completion_lengths(out[:, enc.input_ids.shape[1]:], eos)
    return int(lengths.sum())


def hf_static(compiled: bool) -> Callable[..., int]:
    """HF generate with a static KV cache, and with its decode forward compiled by torch.compile (inductor, no CUDA
    graphs: HF compiles on the CPU only when told to, `CompileConfig._compile_all_devices`)."""
    def run(model, tokenizer, prompts: list[str], args: argparse.Namespace) -> int:
        from transformers import CompileConfig

        compile_config = CompileConfig(mode="default", dynamic=False)
        compile_config._compile_all_devices = compiled
        return hf_generate(model, tokenizer, prompts, args, cache_implementation="static",
                           compile_config=compile_config if compiled else None, disable_compile=not compiled)
    return run


@contextmanager
def without(features: tuple[str, ...]) -> Iterator[None]:
    """The shared-prefill sampler without some of its later optimisations, to measure each one:
    `reserved_cache` (the KV cache then grows by concatenation at every decode step, HF's DynamicLayer),
    `shared_head` (every prompt then prefilled whole, its system-prompt head included), `fast_draw` (ATen's
    serial exponential_ instead), `inference_mode` (no_grad instead), `prebuilt_mask` (HF's own per step) and
    `fused_step` (the model's forward at every decode step)."""
    import gpgrl.rollout.decode_step as decode_step
    import gpgrl.rollout.prefill as prefill
    import gpgrl.rollout.sampling as sampling

    saved = (sampling.expand_cache, prefill.MIN_SHARED_HEAD, sampling.exponential_noise, sampling.DECODE_MODE,
             sampling.prebuilt_mask_applies)
    if "reserved_cache" in features:
        sampling.expand_cache = lambda cache, n, reserve: cache.batch_repeat_interleave(n)
    if "shared_head" in features:
        prefill.MIN_SHARED_HEAD = 1 << 30
    if "fast_draw" in features:
        sampling.exponential_noise = lambda rows, vocab, like: like.new_empty(rows, vocab).exponential_()
    if "inference_mode" in features:
        sampling.DECODE_MODE = torch.no_grad
    if "prebuilt_mask" in features:
        sampling.prebuilt_mask_applies = lambda model, prompts: False
    decode_step.FUSED = "fused_step" not in features
    try:
        yield
    finally:
        decode_step.FUSED = True
        (sampling.expand_cache, prefill.MIN_SHARED_HEAD, sampling.exponential_noise, sampling.DECODE_MODE,
         sampling.prebuilt_mask_applies) = saved


def gpgrl_generate(shared: bool, bf16: bool, off: tuple[str, ...] = ()) -> Callable[..., int]:
    def run(model, tokenizer, prompts: list[str], args: argparse.Namespace) -> int:
        from gpgrl.rollout import SamplingParams, TextEncoder, generate

        forced = args.max_new_tokens if args.lengths == "forced" else 0
        params = SamplingParams(args.max_new_tokens, args.temperature, 1.0, len(prompts) * args.generations,
                                forced, shared, bf16)
        encoder = TextEncoder(tokenizer, "", "{question}")
        with without(off):
            groups = generate(model, encoder, [encoder.encode_text(p) for p in prompts], args.generations, params)
        return sum(s.length for g in groups for s in g)

    return run


RUNNERS = {"hf_generate": hf_generate, "gpgrl": gpgrl_generate(False, False),
           "gpgrl_prefill": gpgrl_generate(True, False), "gpgrl_prefill_bf16": gpgrl_generate(True, True),
           "gpgrl_prefill_grown": gpgrl_generate(True, False, ("reserved_cache",)),
           "gpgrl_prefill_whole": gpgrl_generate(True, False, ("shared_head",)),
           "gpgrl_prefill_aten_draw": gpgrl_generate(True, False, ("fast_draw",)),
           "gpgrl_prefill_untrimmed": gpgrl_generate(True, False, ("fast_draw", "inference_mode", "prebuilt_mask")),
           "gpgrl_prefill_hf_step": gpgrl_generate(True, False, ("fused_step",)),
           "hf_generate_static": hf_static(False), "hf_generate_static_compiled": hf_static(True)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lengths", choices=("forced", "natural"), default="forced")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from gpgrl.config import ModelConfig
    from gpgrl.models import load_policy

    args = parse(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    model, tokenizer = load_policy(ModelConfig(name=args.model), args.seed)
    model.eval()
    prompts = default_prompts(args.model, args.prompts * (args.repeats + 1), args.seed)
    env = machine()
    print(f"{args.model}: {args.prompts} prompts x {args.generations}, {args.max_new_tokens} new tokens "
          f"({args.lengths}); {env['cpu']}, {env['cores']} cores, loadavg {env['loadavg']}")
    times: dict[str, list[float]] = {v: [] for v in variants}
    tokens: dict[str, list[int]] = {v: [] for v in variants}
    for r in range(args.repeats + 1):  # repeat 0 warms up
        batch = prompts[r * args.prompts:(r + 1) * args.prompts]
        for i in range(len(variants)):
            v = variants[(r + i) % len(variants)]
            torch.manual_seed(args.seed + r)
            start = time.perf_counter()
            with torch.no_grad():
                n = RUNNERS[v](model, tokenizer, batch, args)
            elapsed = time.perf_counter() - start
            if r:
                times[v].append(elapsed)
                tokens[v].append(n)
            print(f"  {'warm-up' if not r else f'repeat {r}':<9} {v:<24} {elapsed:7.2f} s  {n:5d} tokens", flush=True)
    summary = {v: {"time_s": median(times[v]), "tokens": median(tokens[v]),
                   "tokens_per_s": median([n / t for n, t in zip(tokens[v], times[v], strict=True)])}
               for v in variants}
    base = summary.get("hf_generate", {}).get("time_s")
    env["loadavg_end"] = list(os.getloadavg())
    print(f"\n{'variant':<24} {'time s':>8} {'tokens':>7} {'tok/s':>8} {'vs hf':>6}")
    for v, row in summary.items():
        row["ratio_vs_hf_generate"] = row["time_s"] / base if base else None  # None: hf_generate was not run
        ratio = "–" if row["ratio_vs_hf_generate"] is None else f"{row['ratio_vs_hf_generate']:.2f}"
        print(f"{v:<24} {row['time_s']:8.3f} {row['tokens']:7.0f} {row['tokens_per_s']:8.1f} {ratio:>6}")
    roof = roofline(model, tokenizer, prompts[args.repeats * args.prompts:], args, summary)
    write_json(args.out, {"args": vars(args), "machine": env, "summary": summary, "times": times, "tokens": tokens,
                          "roofline": roof})
    if roof:
        print(f"roofline_fraction={roof['roofline_fraction']:.3f}")


def roofline(model, tokenizer, batch: list[str], args: argparse.Namespace, summary: dict) -> dict | None:
    """The roofline time of one generation of `batch` (shared prefill, then max-new-tokens decode steps) against
    the default sampler's measured median; None when gpgrl_prefill was not measured."""
    if "gpgrl_prefill" not in summary:
        return None
    rows = args.prompts * args.generations
    lim = limits(model, rows)
    import torch

    from gpgrl.rollout import PromptInputs
    from gpgrl.rollout.prefill import shared_head_length

    ids = [torch.tensor(tokenizer(p, add_special_tokens=False).input_ids) for p in batch]
    lp, head = max(len(t) for t in ids), shared_head_length([PromptInputs(t) for t in ids])
    prefill_tokens = head + sum(len(t) - head for t in ids)  # the least a prefill must encode: a shared head once
    prefill_lim = limits(model, prefill_tokens)  # the prefill's GEMMs have one row per token
    steps = summary["gpgrl_prefill"]["tokens"] / rows  # decode steps taken (forced lengths: max new tokens)
    prefill = roofline_seconds(forward_flops(model, prefill_tokens, lp // 2), 4.0 * weight_count(model),
                               prefill_lim)
    decode = sum(roofline_seconds(*decode_step(model, rows, lp + t), lim) for t in range(int(round(steps)) - 1))
    flops, bytes_ = decode_step(model, rows, lp)
    measured = summary["gpgrl_prefill"]["time_s"]
    out = {"matmul_gflops": lim.matmul_gflops, "prefill_matmul_gflops": prefill_lim.matmul_gflops,
           "bandwidth_gbs": lim.bandwidth_gbs, "rows": rows,
           "prompt_tokens": lp, "shared_head_tokens": head, "prefill_tokens": prefill_tokens,
           "decode_steps": steps, "decode_step_gflop": flops / 1e9,
           "decode_step_gb": bytes_ / 1e9, "roofline_prefill_s": prefill, "roofline_decode_s": decode,
           "measured_s": measured, "roofline_fraction": (prefill + decode) / measured}
    bound = "compute" if flops / lim.matmul_gflops > bytes_ / lim.bandwidth_gbs else "memory"
    print()
    print(f"roofline on this machine: F.linear on the model's shapes at {rows} rows {lim.matmul_gflops:.1f} "
          f"GFLOP/s ({prefill_lim.matmul_gflops:.1f} at the prefill's {prefill_tokens} tokens, a shared head of "
          f"{head} once), copy bandwidth "
          f"{lim.bandwidth_gbs:.1f} GB/s; a decode step {flops / 1e9:.2f} GFLOP and "
          f"{bytes_ / 1e9:.2f} GB ({bound}-bound); generation at the roofline {prefill + decode:.2f} s (prefill "
          f"{prefill:.2f} s), measured {measured:.2f} s")
    return out



if __name__ == "__main__":
    main()
