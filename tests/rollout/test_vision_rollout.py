"""Rollout for vision-language models, per family: vision inputs prepared once per prompt and batched by layout,
training log-probs equal to `generate`'s sampling distribution, the fast paths equal to the plain ones, image
tokens never sampled, and a gradient that does not depend on the micro-batch size."""

import dataclasses

import pytest
import torch
from rich.console import Console

from gpgrl.config import ModelConfig, build_config
from gpgrl.data import load_splits
from gpgrl.models import load_policy
from gpgrl.rollout import SamplingParams, collate, generate, make_encoder, token_logprobs
from gpgrl.rollout.inputs import PromptInputs, Vision, vision_batch

FAMILIES = ["tiny-random-qwen2-vl", "tiny-random-qwen2.5-vl", "tiny-random-idefics3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("vision-cache"))


@pytest.fixture(scope="module")
def items():
    cfg = build_config(overrides=["data.source=shapes", "data.task=count", "data.train_size=8", "data.eval_size=2"])
    return load_splits(cfg.data)[0]


def setup_family(cache, name, items, many_eos: bool = True):
    model, processor = load_policy(ModelConfig(name=name, cache_dir=cache), 0)
    encoder = make_encoder(processor, model, "", "{question}")
    if many_eos:  # so that random completions end at varied lengths
        model.generation_config.eos_token_id = [processor.tokenizer.eos_token_id, *range(100, 160)]
    return model, encoder, [encoder.encode(ex) for ex in items[:4]]


def test_vision_batch_assembles_each_layout_per_sample_and_image():
    one = PromptInputs(torch.tensor([5, 6]), Vision(token={"tt": torch.tensor([1, 0])},
                                                  rows={"pix": torch.ones(3, 2)},
                                                  stacked={"img": torch.ones(1, 2, 2)}))
    two = PromptInputs(torch.tensor([7, 8, 9]), Vision(token={"tt": torch.tensor([0, 1, 1])},
                                                     rows={"pix": 2 * torch.ones(1, 2)},
                                                     stacked={"img": 2 * torch.ones(2, 2, 2)}))
    text = PromptInputs(torch.tensor([4]))
    out = vision_batch([one, text, two], lp=3, total=5)
    assert out["tt"].tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 0, 0]]  # left-padded, zero after
    assert out["pix"].tolist() == [[1, 1]] * 3 + [[2, 2]]  # rows in batch order
    assert out["img"].shape == (3, 2, 2, 2)  # [B, most images, ...], zero images pad
    assert out["img"][0, 1].abs().sum() == 0 and out["img"][1].abs().sum() == 0 and out["img"][2].min() == 2
    assert vision_batch([text], 1, 1) == {}


@pytest.mark.parametrize("name", FAMILIES)
def test_training_logprobs_equal_the_sampling_distribution(cache, items, name):
    model, encoder, prompts = setup_family(cache, name, items, many_eos=False)
    inputs = encoder.model_inputs(prompts[:3])
    model.eval()
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=6,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=encoder.pad_id,
                         suppress_tokens=list(encoder.suppressed_ids))
    lp = inputs["input_ids"].shape[1]
    scores = torch.stack(out.scores, dim=1).float()  # [B, L, V], already divided by T and suppressed
    expected = torch.log_softmax(scores, -1).gather(-1, out.sequences[:, lp:, None]).squeeze(-1)  # [B, L]
    from gpgrl.rollout import Sample

    samples = [Sample(p.ids, out.sequences[b, lp:], "", False, p.vision) for b, p in enumerate(prompts[:3])]
    with torch.no_grad():
        got = token_logprobs(model, collate(samples, encoder.pad_id, suppressed_ids=encoder.suppressed_ids), 0.7)
        alone = [token_logprobs(model, collate([s], encoder.pad_id, suppressed_ids=encoder.suppressed_ids), 0.7)
                 for s in samples]
    assert torch.allclose(got, expected, atol=1e-5)
    assert all(torch.allclose(a[0], got[b], atol=1e-5) for b, a in enumerate(alone))  # padding changes nothing


@pytest.mark.parametrize("name", FAMILIES)
def test_shared_prefill_draws_the_same_samples_as_generate(cache, items, name):
    model, encoder, prompts = setup_family(cache, name, items)
    for params in (SamplingParams(10, 1.0, 1.0, 64), SamplingParams(8, 0.7, 0.9, 6), SamplingParams(6, 0.0)):
        drawn = []
        for shared in (False, True):
            torch.manual_seed(3)
            groups = generate(model, encoder, prompts, 3, dataclasses.replace(params, shared_prefill=shared))
            drawn.append(([[s.completion_ids.tolist() for s in g] for g in groups], torch.rand(2)))
        assert drawn[0][0] == drawn[1][0] and torch.equal(drawn[0][1], drawn[1][1])
    assert all(s.vision is prompts[i].vision for i, g in enumerate(groups) for s in g)  # prepared once


@pytest.mark.parametrize("name", FAMILIES)
def test_shared_prompt_forward_gives_the_plain_logprobs_and_gradient(cache, items, name):
    model, encoder, prompts = setup_family(cache, name, items)
    torch.manual_seed(1)
    samples = [s for g in generate(model, encoder, prompts, 3, SamplingParams(10, 1.0)) for s in g][2:]

    def grads(mb):
        model.zero_grad(set_to_none=True)
        weights = torch.linspace(-1, 1, mb.completion_mask.numel()).view_as(mb.completion_mask)  # [B, Lc]
        logp = token_logprobs(model, mb, 0.7)  # [B, Lc]
        (logp * mb.completion_mask * weights).sum().backward()
        return (logp * mb.completion_mask).detach(), torch.cat([p.grad.flatten() for p in model.parameters()
                                                                 if p.grad is not None])

    model.train()
    plain_lp, plain = grads(collate(samples, encoder.pad_id, suppressed_ids=encoder.suppressed_ids))
    mb = collate(samples, encoder.pad_id, share_prompts=True, suppressed_ids=encoder.suppressed_ids)
    assert mb.prompt_rows is not None and mb.prompt_rows.numel() == 4  # same ids, different images: not shared
    shared_lp, shared = grads(mb)
    assert torch.allclose(shared_lp, plain_lp, atol=1e-5)
    assert (shared - plain).abs().max() <= 1e-5 * plain.abs().max()


def test_image_tokens_are_never_sampled_even_when_the_model_prefers_them(cache, items):
    model, encoder, prompts = setup_family(cache, "tiny-random-qwen2-vl", items)
    favoured = torch.tensor(encoder.suppressed_ids)
    with torch.no_grad():
        model.lm_head.weight[favoured] *= 50.0  # tied: the placeholder rows now dominate every logit
    try:
        for shared in (False, True):
            groups = generate(model, encoder, prompts, 4, SamplingParams(6, 1.0, shared_prefill=shared))
            tokens = torch.cat([s.completion_ids for g in groups for s in g])
            assert not torch.isin(tokens, favoured).any()
        samples = [s for g in groups for s in g]
        logp = token_logprobs(model, collate(samples, encoder.pad_id, suppressed_ids=encoder.suppressed_ids), 1.0)
        assert torch.isfinite(logp).all()
    finally:
        with torch.no_grad():
            model.lm_head.weight[favoured] /= 50.0


def one_step(tmp_path, cache, *overrides: str):
    from gpgrl.trainer import setup, train_step

    cfg = build_config({}, ["model.name=tiny-random-qwen2-vl", f"model.cache_dir={cache}",
                            f"train.output_dir={tmp_path / 'run'}", "data.source=shapes", "data.task=count",
                            "data.train_size=32", "data.eval_size=4", "rollout.prompts_per_step=3",
                            "rollout.generations_per_prompt=4", "rollout.max_new_tokens=8", "algorithm.beta_th=0",
                            "optim.lr=1e-3", "optim.warmup_steps=0", "logging.tensorboard=false",
                            "reward.functions=[tests/fixture_rewards.py:digit_fraction]", "reward.weights=[1.0]",
                            'data.prompt_template="{question}"', *overrides])
    run = setup(cfg, Console(quiet=True))
    metrics, groups = train_step(run, 1)
    return metrics, groups, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_the_micro_batch_size_and_the_fast_paths_do_not_change_a_step(tmp_path, cache):
    plain = ("rollout.shared_prefill=false", "rollout.shared_prompt_forward=false")
    m1, g1, p1 = one_step(tmp_path / "a", cache, "rollout.micro_batch_size=1", *plain)
    m2, g2, p2 = one_step(tmp_path / "b", cache, "rollout.micro_batch_size=64", *plain)
    m3, g3, p3 = one_step(tmp_path / "c", cache, "rollout.micro_batch_size=5", "rollout.shared_prefill=true",
                          "rollout.shared_prompt_forward=true")
    same = [[s.completion_ids.tolist() for s in g.samples] for g in g1]
    assert same == [[s.completion_ids.tolist() for s in g.samples] for g in g2] == \
        [[s.completion_ids.tolist() for s in g.samples] for g in g3]
    assert m1["work_saved_fraction"] > 0  # zero-advantage samples skip forward/backward
    for m in (m2, m3):
        assert m["loss"] == pytest.approx(m1["loss"], abs=1e-6)
        assert m["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-6)
    for params in (p2, p3):  # Adam's first step is ~lr * sign(grad): compare where the gradient is clearly non-zero
        assert sum(torch.isclose(p1[k], params[k], atol=1e-6).float().mean() for k in p1) / len(p1) > 0.99
