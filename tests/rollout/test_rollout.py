"""Rollout: completion masks at the first EOS, collation, log-probs consistent with sampling, and the fast
paths (shared prefill, shared prompt forward, bf16 autocast) against the plain ones."""

import contextlib
import dataclasses

import pytest
import torch
from rich.console import Console

from gpgrl.config import ConfigError, ModelConfig, RolloutConfig, build_config
from gpgrl.models import load_policy
from gpgrl.rollout import (
    Sample,
    SamplingParams,
    TextEncoder,
    can_share_prompts,
    collate,
    completion_lengths,
    generate,
    selective_log_softmax,
    token_logprobs,
)


def encoded(tok, prompts: list[str]) -> tuple[TextEncoder, list]:
    """A text encoder and the prompts encoded as they are (no chat template)."""
    encoder = TextEncoder(tok, "", "{question}")
    return encoder, [encoder.encode_text(p) for p in prompts]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok = load_policy(ModelConfig(name="tiny-random", cache_dir=str(tmp_path_factory.mktemp("c"))), 0)
    return model, tok


def test_completion_lengths_stop_after_first_eos():
    ids = torch.tensor([[5, 9, 2, 7, 2],  # EOS (9) at index 1 -> length 2, EOS included
                        [5, 6, 7, 8, 3],  # no EOS -> full length 5, truncated
                        [9, 0, 0, 0, 0]])  # EOS first -> length 1
    lengths, truncated = completion_lengths(ids, {9})
    assert lengths.tolist() == [2, 5, 1]
    assert truncated.tolist() == [False, True, False]


def test_collate_pads_left_and_right():
    a = Sample(torch.tensor([1, 2, 3]), torch.tensor([4, 5]), "", False)
    b = Sample(torch.tensor([6]), torch.tensor([7, 8, 9]), "", False)
    mb = collate([a, b], pad_id=0)
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5, 0], [0, 0, 6, 7, 8, 9]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]
    assert mb.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]


def test_selective_log_softmax_matches_full():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # [1, 2, 3]
    tokens = torch.tensor([[2, 1]])
    # log softmax([1,2,3])[2] = 3 - log(e + e^2 + e^3) = -0.40760596; uniform over 3: -log 3 = -1.09861229
    out = selective_log_softmax(logits, tokens)
    assert torch.allclose(out, torch.tensor([[-0.40760596, -1.09861229]]), atol=1e-6)


def test_logprobs_do_not_depend_on_padding(tiny):
    model, tok = tiny
    groups = generate(model, *encoded(tok, ["Calculate 1 + 2.", "What is 12 + 35 ?"]), 2,
                      SamplingParams(12, 1.0, 1.0, 8))
    samples = [s for g in groups for s in g]
    model.eval()
    with torch.no_grad():
        together = token_logprobs(model, collate(samples, tok.pad_token_id), 1.0)  # [4, Lc]
        for row, s in enumerate(samples):
            alone = token_logprobs(model, collate([s], tok.pad_token_id), 1.0)  # [1, Lc_s]
            assert torch.allclose(together[row, : s.length], alone[0, : s.length], atol=1e-5)


def test_logprobs_equal_the_sampling_distribution(tiny):
    """The scores generate sampled from (logits / T) give the same log-probs as the training forward."""
    model, tok = tiny
    model.eval()
    enc = tok(["Calculate 3 * 4."], return_tensors="pt")
    torch.manual_seed(0)
    # no min_new_tokens: that processor would mask EOS and change the distribution being compared
    out = model.generate(**enc, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=6,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    completion = out.sequences[0, enc.input_ids.shape[1]:]  # [L]
    scores = torch.stack(out.scores, dim=1)[0]  # [L, V], already divided by T
    expected = torch.log_softmax(scores.float(), -1).gather(-1, completion[:, None]).squeeze(-1)  # [L]
    sample = Sample(enc.input_ids[0], completion, "", False)
    with torch.no_grad():
        got = token_logprobs(model, collate([sample], tok.pad_token_id), 0.7)[0]  # [L]
    assert torch.allclose(got, expected, atol=1e-4)


def test_generate_returns_groups_in_prompt_order(tiny):
    model, tok = tiny
    groups = generate(model, *encoded(tok, ["a", "b b", "c c c"]), 3, SamplingParams(5, 1.0, 1.0, 4))
    assert [len(g) for g in groups] == [3, 3, 3]
    assert [g[0].prompt_ids.tolist() for g in groups] == [tok(p, add_special_tokens=False).input_ids
                                                          for p in ["a", "b b", "c c c"]]
    assert all(1 <= s.length <= 5 for g in groups for s in g)


# ---------------------------------------------------------------- fast paths against the plain ones

PROMPTS = ["Calculate 1 + 2.", "What is 12 + 35 ? Think first, then give the sum.", "a b", "the answer is"]


@contextlib.contextmanager
def extra_eos(model, tok):
    """Make 40 of the 512 tokens EOS too, so that completions of the random model end at varied lengths."""
    config = model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [tok.eos_token_id, *range(100, 140)]
    try:
        yield
    finally:
        config.eos_token_id = saved


def sample_both(model, tok, params: SamplingParams, n: int, seed: int = 5):
    """The same draw through generate's plain path and the shared-prefill path, plus the RNG state after."""
    out = []
    for shared in (False, True):
        torch.manual_seed(seed)
        groups = generate(model, *encoded(tok, PROMPTS), n, dataclasses.replace(params, shared_prefill=shared))
        out.append((groups, torch.rand(3)))
    return out


def assert_same_groups(a, b):
    assert [[s.completion_ids.tolist() for s in g] for g in a] == [[s.completion_ids.tolist() for s in g] for g in b]
    assert [[(s.truncated, s.text) for s in g] for g in a] == [[(s.truncated, s.text) for s in g] for g in b]
    assert [[s.prompt_ids.tolist() for s in g] for g in a] == [[s.prompt_ids.tolist() for s in g] for g in b]


@pytest.mark.parametrize("temperature,top_p,batch", [(1.0, 1.0, 64), (0.7, 0.9, 6)])
def test_shared_prefill_draws_the_same_samples_as_generate(tiny, temperature, top_p, batch):
    model, tok = tiny
    with extra_eos(model, tok):
        (plain, rng_plain), (shared, rng_shared) = sample_both(model, tok, SamplingParams(16, temperature, top_p,
                                                                                          batch), 3)
    lengths = [s.length for g in plain for s in g]
    assert len(set(lengths)) > 2 and any(s.truncated for g in plain for s in g), lengths  # EOS and truncation
    assert_same_groups(plain, shared)
    assert torch.equal(rng_plain, rng_shared), "both paths consume the global RNG identically"
    # decoded in inference mode, handed out as ordinary tensors (training may save them for backward)
    assert not any(s.completion_ids.is_inference() or s.prompt_ids.is_inference() for g in shared for s in g)


def test_the_decode_mask_is_prebuilt_only_where_it_equals_hfs(tiny):
    from transformers import MistralConfig, Qwen2Config

    from gpgrl.rollout.sampling import prebuilt_mask_applies

    model, tok = tiny
    _, prompts = encoded(tok, PROMPTS)
    assert prebuilt_mask_applies(model, prompts)  # so the equality tests above ran the prebuilt mask
    assert not prebuilt_mask_applies(model, [dataclasses.replace(prompts[0], vision=object())])

    def fake(config, implementation="sdpa"):
        config._attn_implementation = implementation
        return type("Model", (), {"config": config})()

    assert not prebuilt_mask_applies(fake(Qwen2Config(), "eager"), prompts)
    assert not prebuilt_mask_applies(fake(Qwen2Config(layer_types=["full_attention", "sliding_attention"],
                                                       num_hidden_layers=2, use_sliding_window=True)), prompts)
    assert not prebuilt_mask_applies(fake(MistralConfig(sliding_window=16)), prompts)
    assert prebuilt_mask_applies(fake(MistralConfig(sliding_window=None)), prompts)


def test_shared_prefill_greedy_matches_generate(tiny):
    model, tok = tiny
    (plain, _), (shared, _) = sample_both(model, tok, SamplingParams(10, 0.0), 1)
    assert_same_groups(plain, shared)


@pytest.mark.parametrize("shared", [False, True])
def test_min_new_tokens_forces_the_length(tiny, shared):
    model, tok = tiny
    with extra_eos(model, tok):
        groups = generate(model, *encoded(tok, PROMPTS), 3,
                          SamplingParams(12, 1.0, min_new_tokens=12, shared_prefill=shared))
        early = generate(model, *encoded(tok, PROMPTS), 3,
                         SamplingParams(12, 1.0, min_new_tokens=4, shared_prefill=shared))
    assert all(s.length == 12 and s.truncated for g in groups for s in g)
    assert all(s.length >= 4 for g in early for s in g) and any(s.length < 12 for g in early for s in g)


def test_collate_records_distinct_prompts_only_when_shared():
    a, b = torch.tensor([1, 2, 3]), torch.tensor([6])
    samples = [Sample(a, torch.tensor([4]), "", False), Sample(a.clone(), torch.tensor([5, 6]), "", False),
               Sample(b, torch.tensor([7]), "", False), Sample(a, torch.tensor([8]), "", False)]
    mb = collate(samples, pad_id=0, share_prompts=True)
    assert mb.prompt_rows.tolist() == [0, 2] and mb.prompt_owner.tolist() == [0, 0, 1, 0]
    assert collate(samples, pad_id=0).prompt_rows is None
    assert collate(samples[1:3], pad_id=0, share_prompts=True).prompt_rows is None  # nothing to share


def grads_of(model, mb, temperature: float, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    weights = torch.linspace(-1.0, 1.0, mb.completion_mask.numel()).view_as(mb.completion_mask)  # [B, Lc]
    logp = token_logprobs(model, mb, temperature, bf16)  # [B, Lc]
    (logp * mb.completion_mask * weights).sum().backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return (logp * mb.completion_mask).detach(), grad


@pytest.mark.parametrize("head", ["", "You are a careful assistant. Think step by step, then put the final answer "
                                  "in a box at the very end. "])
def test_shared_prompt_forward_gives_the_plain_logprobs_and_gradient(tiny, head, monkeypatch):
    from gpgrl.rollout import logprobs

    model, tok = tiny
    heads = []
    monkeypatch.setattr(logprobs, "forward_with_head",
                        lambda *a, _real=logprobs.forward_with_head: heads.append(a[2]) or _real(*a))
    with extra_eos(model, tok):
        torch.manual_seed(1)
        groups = generate(model, *encoded(tok, [head + p for p in PROMPTS]), 3, SamplingParams(10, 1.0))
    samples = [s for g in groups for s in g][2:]  # groups cut across the micro-batch edge, as in training
    assert len({s.length for s in samples}) > 1
    model.train()
    plain_lp, plain_grad = grads_of(model, collate(samples, tok.pad_token_id), 0.7)
    mb = collate(samples, tok.pad_token_id, share_prompts=True)
    assert mb.prompt_rows is not None and can_share_prompts(model)
    shared_lp, shared_grad = grads_of(model, mb, 0.7)
    assert bool(heads) == bool(head)  # a shared head is run once for the micro-batch's prompts
    assert torch.allclose(shared_lp, plain_lp, atol=1e-5)
    assert (shared_grad - plain_grad).abs().max() <= 1e-5 * plain_grad.abs().max()


@pytest.mark.parametrize("head", [0, 40])
def test_shared_prompt_forward_gradient_is_bitwise_reproducible(tiny, head):
    """Same micro-batch, same gradient, every time. Rows picked from the prompts' activations by a duplicated
    index (`x[owner]`) got their gradient from index_put's accumulate, which with more than one thread and at
    least 32768 elements adds with unordered atomics on the CPU: same-seed runs differed in the last bit (up to
    2.4e-7 after two steps, in 11 of 150 tries: benchmarks/same_seed_repeats.py). Two long prompts whose
    completions alternate make every thread add into the same rows at once, so the old code fails here nearly
    every time (with one thread it cannot fail)."""
    model, tok = tiny
    model.train()
    g = torch.Generator().manual_seed(0)
    shared = torch.randint(2, 400, (head,), generator=g)
    prompts = [torch.cat([shared, torch.randint(2, 400, (300 - head,), generator=g)]) for _ in range(2)]
    samples = [Sample(p, torch.randint(2, 400, (int(n),), generator=g), "", False)
               for n in torch.randint(1, 9, (6,), generator=g) for p in prompts]  # owners 0, 1, 0, 1, ...
    mb = collate(samples, tok.pad_token_id, share_prompts=True)
    assert mb.prompt_rows is not None
    _, first = grads_of(model, mb, 0.7)
    assert all(torch.equal(grads_of(model, mb, 0.7)[1], first) for _ in range(8))


def test_shared_prompt_forward_is_not_used_under_checkpointing(tmp_path):
    model, _ = load_policy(ModelConfig(name="tiny-random", cache_dir=str(tmp_path), gradient_checkpointing=True), 0)
    assert not can_share_prompts(model)


def test_autocast_bf16_stays_close_to_fp32_and_restores_the_head(tiny):
    model, tok = tiny
    torch.manual_seed(2)
    groups = generate(model, *encoded(tok, PROMPTS), 2, SamplingParams(8, 1.0, autocast_bf16=True))
    samples = [s for g in groups for s in g]
    mb = collate(samples, tok.pad_token_id, share_prompts=True)
    model.train()
    fp32_lp, fp32_grad = grads_of(model, mb, 1.0)
    bf16_lp, bf16_grad = grads_of(model, mb, 1.0, bf16=True)
    assert (bf16_lp - fp32_lp).abs().max() < 0.05  # nats per token (docs/performance.md: SmolLM2 numbers)
    cosine = torch.nn.functional.cosine_similarity(bf16_grad, fp32_grad, dim=0)
    assert cosine > 0.99
    assert "forward" not in model.get_output_embeddings().__dict__


def test_the_exact_fast_paths_are_on_by_default_and_the_approximate_ones_off():
    cfg = build_config()
    assert (cfg.rollout.min_new_tokens, cfg.rollout.shared_prefill, cfg.rollout.shared_prompt_forward,
            cfg.model.autocast_bf16) == (0, True, True, False)
    with pytest.raises(ConfigError, match="rollout.min_new_tokens"):
        RolloutConfig(max_new_tokens=8, min_new_tokens=9)
    with pytest.raises(ConfigError, match="model.autocast_bf16"):
        ModelConfig(dtype="bfloat16", autocast_bf16=True)
    # gradient checkpointing: the shared prompt forward falls back to the plain one, quietly
    assert build_config({}, ["model.gradient_checkpointing=true"]).rollout.shared_prompt_forward


def one_step(tmp_path, *overrides: str):
    from gpgrl.trainer import setup, train_step

    cfg = build_config({}, ["model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}",
                            f"train.output_dir={tmp_path / 'run'}", "data.train_size=32", "data.eval_size=4",
                            "rollout.prompts_per_step=3", "rollout.generations_per_prompt=4",
                            "rollout.max_new_tokens=8", "rollout.micro_batch_size=5", "algorithm.beta_th=0",
                            "optim.lr=1e-3", "optim.warmup_steps=0", "logging.tensorboard=false",
                            "reward.functions=[tests/fixture_rewards.py:digit_fraction]", "reward.weights=[1.0]",
                            *overrides])
    run = setup(cfg, Console(quiet=True))
    metrics, groups = train_step(run, 1)
    return metrics, groups, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_a_training_step_with_the_fast_paths_equals_the_plain_step(tmp_path):
    m0, g0, p0 = one_step(tmp_path, "rollout.shared_prefill=false", "rollout.shared_prompt_forward=false")
    m1, g1, p1 = one_step(tmp_path, "rollout.shared_prefill=true", "rollout.shared_prompt_forward=true")
    assert [[s.completion_ids.tolist() for s in g.samples] for g in g0] == \
        [[s.completion_ids.tolist() for s in g.samples] for g in g1]
    assert m0["loss"] == pytest.approx(m1["loss"], abs=1e-6)
    assert m0["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-5)
    # Adam's first step is ~lr * sign(grad): parameters only agree where the gradient is clearly non-zero
    assert sum(torch.isclose(p0[k], p1[k], atol=1e-6).float().mean() for k in p0) / len(p0) > 0.99


def test_gpgrl_never_imports_trl():
    """TRL is a benchmark-only extra (benchmarks/step_time.py), never a runtime dependency."""
    import re
    from pathlib import Path

    import gpgrl

    pattern = re.compile(r"^\s*(from\s+trl[\s.]|import\s+trl\b)", re.MULTILINE)
    offenders = [str(p) for p in Path(gpgrl.__file__).parent.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_stop_after_answer_cuts_at_the_first_complete_answer(tiny):
    from gpgrl.rollout.sampling import AnswerWatch, _AnswerStop, _to_samples

    _, tok = tiny
    encoder, (prompt,) = encoded(tok, ["q"])
    texts = [r"so \boxed{12} and \boxed{13}", r"\boxed{1", "no answer at all", "<answer>4</answer> then"]
    rows = [torch.tensor(tok(t, add_special_tokens=False).input_ids) for t in texts]
    width = max(r.numel() for r in rows)
    batch = torch.full((len(rows), width), tok.pad_token_id)
    for i, r in enumerate(rows):
        batch[i, : r.numel()] = r
    plain = _to_samples(tok, [prompt] * 4, batch, {tok.eos_token_id})
    cut = _to_samples(tok, [prompt] * 4, batch, {tok.eos_token_id}, stop_after_answer=True)
    assert [s.text.strip() for s in cut] == [r"so \boxed{12}", r"\boxed{1", "no answer at all", "<answer>4</answer>"]
    assert [s.truncated for s in cut] == [False, True, True, False]  # stopped at an answer, or not stopped at all
    for full, short in zip(plain, cut, strict=True):  # the kept tokens are the sampled ones, nothing else
        assert torch.equal(short.completion_ids, full.completion_ids[: short.length])
    watch = AnswerWatch(tok)
    closed = watch.answered(batch[:, :width], torch.ones(4, dtype=torch.bool))
    assert closed.tolist() == [True, False, False, True]
    stop = _AnswerStop(tok, prompt_len=2)
    assert stop(torch.cat([torch.zeros(4, 2, dtype=torch.long), batch], dim=1), None).tolist() == closed.tolist()


def test_multinomial_rows_is_torch_multinomial_on_the_full_batch():
    from gpgrl.rollout.sampling import multinomial_rows

    probs = torch.softmax(torch.randn(6, 300), dim=-1)  # [rows, V]
    active = torch.tensor([1, 4, 5])
    torch.manual_seed(3)
    want = torch.multinomial(probs, 1).squeeze(1)
    after_want = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(multinomial_rows(probs, torch.arange(6), 6), want)
    torch.manual_seed(3)
    assert torch.equal(multinomial_rows(probs[active], active, 6), want[active])
    assert torch.equal(torch.rand(4), after_want)  # the random stream continues where multinomial leaves it
    with pytest.raises(RuntimeError, match="NaN"):
        multinomial_rows(torch.full((2, 3), float("nan")), torch.arange(2), 2)


def test_the_cpu_exponential_noise_is_atens_bit_for_bit():
    """The vectorised draw (float32 on the CPU, what the sampler passes); other dtypes call exponential_ itself."""
    from gpgrl.rollout.sampling import exponential_noise

    torch.manual_seed(11)
    want = torch.empty(700, 1500).exponential_()  # 1M draws
    after_want = torch.rand(3)
    torch.manual_seed(11)
    got = exponential_noise(700, 1500, torch.empty(1))
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert torch.equal(torch.rand(3), after_want)


HEAD = "You are a careful assistant. Think step by step, then put the final answer in a box at the very end. "


def test_shared_head_length():
    from gpgrl.rollout.inputs import PromptInputs, Vision
    from gpgrl.rollout.prefill import MIN_SHARED_HEAD, shared_head_length

    def p(*ids, vision=None):
        return PromptInputs(torch.tensor(ids), vision)

    head = tuple(range(1, MIN_SHARED_HEAD + 1))
    assert shared_head_length([p(*head, 7, 8), p(*head, 9)]) == MIN_SHARED_HEAD
    assert shared_head_length([p(*head, 7), p(*head, 7)]) == MIN_SHARED_HEAD  # each keeps one token of its own
    assert shared_head_length([p(*head[:-1], 7, 8), p(*head[:-1], 9, 9)]) == 0  # too short to be worth it
    assert shared_head_length([p(*head, 7)]) == 0  # one prompt: nothing to share
    assert shared_head_length([p(*head, 7), p(*head, 8, vision=Vision())]) == 0  # vision inputs: whole prompts


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_a_shared_head_is_encoded_once_and_samples_as_generate(tiny, temperature, monkeypatch):
    from gpgrl.rollout import prefill as prefill_module

    model, tok = tiny
    encoder, prompts = encoded(tok, [HEAD + p for p in PROMPTS])
    assert prefill_module.shared_head_length(prompts) >= prefill_module.MIN_SHARED_HEAD
    heads = []
    monkeypatch.setattr(prefill_module, "forward_with_head",
                        lambda *a, _real=prefill_module.forward_with_head: heads.append(a[2]) or _real(*a))
    out = []
    with extra_eos(model, tok):
        for shared in (False, True):
            torch.manual_seed(11)
            out.append(generate(model, encoder, prompts, 3, SamplingParams(12, temperature, 1.0, 64,
                                                                           shared_prefill=shared)))
    assert heads and heads[0] >= len(tok(HEAD, add_special_tokens=False).input_ids) - 1
    assert_same_groups(*out)
