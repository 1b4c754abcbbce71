"""Log-probs of one training micro-batch (forward + backward): variants, their speed, memory and accuracy.

Variants (alternated in a rotating order within one process, same micro-batch and weights each time):

  naive         one forward over prompt + completion with the full [B, L, V] logits, log_softmax, gather
  rowwise       logits only at completion positions (logits_to_keep), log-softmax row by row written into a
                preallocated tensor (gpgrl's selective log-softmax before this benchmark; measured equal to plain)
  plain         gpgrl's plain path: logits only at completion positions, log-softmax over chunks from one split
  shared        + shared prompt forward (each distinct prompt once, completions on its KV cache; the head all
                prompts share, chat template and system prompt, once for the micro-batch)
  shared_whole  as shared with every distinct prompt run whole (before the shared head); not in the default list
  shared_bf16   + bf16 autocast, LM head in fp32 (model.autocast_bf16)
  bf16_head     shared prompt forward under bf16 autocast with the LM head in bf16 too (not offered: accuracy)

The micro-batch holds `--micro-batch` completions of `--prompts` default-recipe prompts (G per prompt) of exactly
`--max-new-tokens` tokens, like the first micro-batch of a default training step. Reported per variant: median
fwd+bwd time, the largest and mean |log-prob - plain fp32| over completion tokens, the gradient's relative
error and cosine to the plain gradient, and (with `--memory`) the peak RSS increase of a fresh process running
only that variant. Last, the roofline of the training pass (`benchmarks/roofline.py`): 3x the forward FLOPs of the
tokens the shared prompt forward computes (a shared head once, each distinct prompt's own tokens once, every
completion token), at this machine's matmul rate on the model's shapes; `roofline_fraction=X` (last line) = that
time over the measured `shared` time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_prompts, machine, median, peak_rss_mb, write_json  # noqa: E402
from roofline import forward_flops, matmul_rate  # noqa: E402

VARIANTS = ("naive", "rowwise", "plain", "shared", "shared_bf16", "bf16_head")


def naive_logprobs(model, mb, temperature: float) -> torch.Tensor:
    """Full logits and a full log-softmax over the vocabulary: what the selective path avoids."""
    out = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids,
                use_cache=False)
    lc = mb.completion_len
    logp = torch.log_softmax(out.logits[:, -lc - 1:-1].float() / temperature, dim=-1)  # [B, Lc, V]
    return logp.gather(-1, mb.input_ids[:, -lc:, None]).squeeze(-1)  # [B, Lc]


def rowwise_logprobs(model, mb, temperature: float) -> torch.Tensor:
    """The earlier selective log-softmax: row by row into a preallocated output."""
    from gpgrl.rollout.logprobs import _full_logits

    logits = _full_logits(model, mb) / temperature  # [B, Lc, V]
    tokens = mb.input_ids[:, -mb.completion_len:]  # [B, Lc]
    out = torch.empty(tokens.shape, dtype=torch.float32)  # [B, Lc]
    for row in range(logits.shape[0]):
        lg = logits[row].float()  # [Lc, V]
        out[row] = lg.gather(-1, tokens[row].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1)
    return out


def logprobs(variant: str, model, batches: dict, temperature: float) -> torch.Tensor:
    from gpgrl.rollout.logprobs import _shared_prompt_logits, selective_log_softmax, token_logprobs

    if variant == "naive":
        return naive_logprobs(model, batches["plain"], temperature)
    if variant == "rowwise":
        return rowwise_logprobs(model, batches["plain"], temperature)
    if variant == "bf16_head":  # autocast over the whole model, LM head included
        mb = batches["shared"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = _shared_prompt_logits(model, mb)
        return selective_log_softmax(logits, mb.input_ids[:, -mb.completion_len:], temperature)
    if variant == "shared_whole":  # the shared prompt forward with every prompt whole (before the shared head)
        import gpgrl.rollout.logprobs as module

        saved, module.shared_head_length = module.shared_head_length, lambda prompts: 0
        try:
            return token_logprobs(model, batches["shared"], temperature)
        finally:
            module.shared_head_length = saved
    mb = batches["plain" if variant == "plain" else "shared"]
    return token_logprobs(model, mb, temperature, autocast_bf16=variant == "shared_bf16")


def fwd_bwd(variant: str, model, batches: dict, temperature: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Time of forward + backward of sum(logp * w); returns it with the masked log-probs and the gradient."""
    mask = batches["plain"].completion_mask
    weights = torch.linspace(-1.0, 1.0, mask.numel()).view_as(mask)  # [B, Lc]
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    logp = logprobs(variant, model, batches, temperature)  # [B, Lc]
    (logp * mask * weights).sum().backward()
    elapsed = time.perf_counter() - start
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return elapsed, (logp * mask).detach(), grad


def build(args: argparse.Namespace):
    from gpgrl.config import ModelConfig
    from gpgrl.models import load_policy
    from gpgrl.rollout import SamplingParams, TextEncoder, collate, generate

    model, tokenizer = load_policy(ModelConfig(name=args.model), args.seed)
    encoder = TextEncoder(tokenizer, "", "{question}")
    prompts = [encoder.encode_text(p) for p in default_prompts(args.model, args.prompts, args.seed)]
    torch.manual_seed(args.seed)
    params = SamplingParams(args.max_new_tokens, 1.0, 1.0, 64, args.max_new_tokens, True)
    samples = [s for g in generate(model, encoder, prompts, args.generations, params) for s in g]
    samples = samples[:args.micro_batch]
    model.train()
    pad = tokenizer.pad_token_id
    return model, {"plain": collate(samples, pad), "shared": collate(samples, pad, share_prompts=True)}


def memory_child(args: argparse.Namespace) -> None:
    model, batches = build(args)
    before = peak_rss_mb()
    for _ in range(2):
        fwd_bwd(args.child, model, batches, args.temperature)
    print(json.dumps({"peak_increase_mb": peak_rss_mb() - before}))


def memory(args: argparse.Namespace, variant: str) -> float:
    here = Path(__file__).resolve()
    cmd = [sys.executable, here.name, "--child", variant, "--model", args.model,
           "--prompts", str(args.prompts), "--generations", str(args.generations), "--max-new-tokens",
           str(args.max_new_tokens), "--micro-batch", str(args.micro_batch), "--seed", str(args.seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=here.parent, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_increase_mb"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--micro-batch", type=int, default=16, help="gpgrl's default rollout.micro_batch_size")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS per variant (fresh processes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child:
        memory_child(args)
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    model, batches = build(args)
    env = machine()
    mb = batches["shared"]
    print(f"{args.model}: micro-batch of {mb.input_ids.shape[0]} completions of {mb.completion_len} tokens, "
          f"{int(mb.prompt_rows.numel()) if mb.prompt_rows is not None else 'no'} distinct prompts, padded "
          f"length {mb.input_ids.shape[1]}; {env['cpu']}, {env['cores']} cores, loadavg {env['loadavg']}")
    _, ref_lp, ref_grad = fwd_bwd("plain", model, batches, args.temperature)
    times: dict[str, list[float]] = {v: [] for v in variants}
    rows = {}
    for r in range(args.repeats + 1):  # repeat 0 warms up and measures accuracy
        for i in range(len(variants)):
            v = variants[(r + i) % len(variants)]
            elapsed, lp, grad = fwd_bwd(v, model, batches, args.temperature)
            if r:
                times[v].append(elapsed)
            else:
                diff = (lp - ref_lp).abs()[batches["plain"].completion_mask.bool()]
                rows[v] = {"logprob_max_abs_diff": float(diff.max()), "logprob_mean_abs_diff": float(diff.mean()),
                           "grad_rel_err": float((grad - ref_grad).norm() / ref_grad.norm()),
                           "grad_cosine": float(torch.nn.functional.cosine_similarity(grad.double(),
                                                                                      ref_grad.double(), dim=0))}
    for v in variants:
        rows[v]["fwd_bwd_s"] = median(times[v])
        if args.memory:
            rows[v]["peak_rss_increase_mb"] = memory(args, v)
    env["loadavg_end"] = list(os.getloadavg())
    print(f"\n{'variant':<12} {'fwd+bwd s':>9} {'vs plain':>8} {'max|dlogp|':>11} {'mean|dlogp|':>11} "
          f"{'grad rel err':>12} {'cosine':>8} {'peak +MiB':>9}")
    for v, row in rows.items():
        row["ratio_vs_plain"] = row["fwd_bwd_s"] / rows["plain"]["fwd_bwd_s"] if "plain" in rows else float("nan")
        print(f"{v:<12} {row['fwd_bwd_s']:9.3f} {row['ratio_vs_plain']:8.2f} {row['logprob_max_abs_diff']:11.2e} "
              f"{row['logprob_mean_abs_diff']:11.2e} {row['grad_rel_err']:12.2e} {row['grad_cosine']:8.5f} "
              f"{row.get('peak_rss_increase_mb', float('nan')):9.0f}")
    roof = roofline(model, mb, rows) if "shared" in rows else None
    write_json(args.out, {"args": vars(args), "machine": env, "summary": rows, "times": times, "roofline": roof})
    if roof:
        print(f"roofline_fraction={roof['roofline_fraction']:.3f}")


def roofline(model, mb, rows: dict) -> dict:
    """Forward + backward = 3x the forward FLOPs of the tokens the shared forward computes, at the measured rate."""
    from gpgrl.rollout import PromptInputs
    from gpgrl.rollout.prefill import shared_head_length

    rows_u = mb.prompt_rows.tolist() if mb.prompt_rows is not None else list(range(mb.input_ids.shape[0]))
    lp, lc = mb.input_ids.shape[1] - mb.completion_len, mb.completion_len
    prompts = [PromptInputs(mb.input_ids[r, :lp][mb.attention_mask[r, :lp].bool()]) for r in rows_u]
    head = shared_head_length(prompts)
    unique = len(prompts)
    prompt_tokens = head + sum(p.ids.numel() - head for p in prompts)  # the least: a shared head once
    b = mb.input_ids.shape[0]
    flops = 3.0 * (forward_flops(model, prompt_tokens, lp // 2) + forward_flops(model, b * lc, lp + lc // 2))
    rate = matmul_rate(model, max(prompt_tokens, b * lc))
    at_limit, measured = flops / (rate * 1e9), rows["shared"]["fwd_bwd_s"]
    print(f"\nroofline: {flops / 1e9:.1f} GFLOP for forward + backward ({unique} prompts, {prompt_tokens} tokens "
          f"with a shared head of {head} once, + {b} x {lc} tokens), F.linear at {rate:.1f} GFLOP/s on the model's "
          f"shapes: {at_limit:.2f} s at the limit, measured {measured:.2f} s")
    return {"gflop": flops / 1e9, "matmul_gflops": rate, "shared_head_tokens": head, "prompt_tokens": prompt_tokens,
            "roofline_s": at_limit, "measured_s": measured,
            "roofline_fraction": at_limit / measured}


if __name__ == "__main__":
    main()
