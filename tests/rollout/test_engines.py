"""Rollout engines without vLLM: the HF engine, the LoRA-merged weights an engine is given, the vLLM engine's
arguments and the rollout.engine keys. (The vLLM engine itself: tests/rollout/test_vllm_engine.py.)"""

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from gpgrl.config import ConfigError, ModelConfig, load_config
from gpgrl.rollout.engines import ENGINES, HFEngine, plain_state


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from gpgrl.models import load_policy

    cfg = ModelConfig(name="tiny-random", cache_dir=str(tmp_path_factory.mktemp("cache")))
    return cfg, load_policy(cfg, 0)


def test_plain_state_merges_lora_as_peft_does(tiny):
    import copy

    from gpgrl.models import load_policy

    cfg, _ = tiny
    lora_cfg = ModelConfig(name=cfg.name, cache_dir=cfg.cache_dir, lora_r=4, lora_alpha=8)
    model, _ = load_policy(lora_cfg, 0)
    with torch.no_grad():  # peft initialises B = 0: make the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    merged = plain_state(model.state_dict(), lora_cfg.lora_alpha / lora_cfg.lora_r)
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    assert max(float((merged[k] - expected[k]).abs().max()) for k in merged) < 1e-6
    assert plain_state(expected, None) is expected  # no adapters: the state dict as it is


def test_the_hf_engine_samples_with_the_whole_model_from_its_seed(tiny):
    from contextlib import contextmanager

    from gpgrl.data import Example
    from gpgrl.rollout import SamplingParams, make_encoder

    cfg, (model, tokenizer) = tiny
    entered = []

    @contextmanager
    def whole_model():
        entered.append(True)
        yield model

    encoder = make_encoder(tokenizer, model, "", "{question}")
    engine = HFEngine(encoder)
    prompts = [encoder.encode(Example(question="1 + 1 =", answer="2"))]
    params = SamplingParams(6, 1.0, shared_prefill=True)
    state = torch.get_rng_state()
    with engine.round(SimpleNamespace(whole_model=whole_model)) as sample:
        a, b, c = sample(prompts, 3, params, 5), sample(prompts, 3, params, 5), sample(prompts, 3, params, 6)
    assert entered == [True]  # one gather for the whole round
    ids = [[s.completion_ids.tolist() for s in group[0]] for group in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert a[0][0].sampler_logprobs is None  # the trainer's own log-probs are exact: nothing to correct
    engine.push_weights(None)  # the sampler is the trained model: nothing to push
    assert set(ENGINES) == {"hf", "vllm"}


def test_vllm_engine_arguments():
    vllm_engine = pytest.importorskip("gpgrl.rollout.vllm_engine")
    cfg = load_config(None, ["rollout.engine=vllm", "rollout.max_prompt_tokens=300", "rollout.max_new_tokens=100",
                             "rollout.vllm_gpu_memory_utilization=0.4"])
    one_cpu = vllm_engine.engine_kwargs(cfg, "/m", 0, 1, cuda=False, position_limit=8192)
    assert one_cpu["max_model_len"] == 400 and one_cpu["enforce_eager"] and one_cpu["seed"] == 0
    assert one_cpu["logprobs_mode"] == "processed_logprobs"
    assert "distributed_executor_backend" not in one_cpu and "gpu_memory_utilization" not in one_cpu
    assert one_cpu["enable_chunked_prefill"] is False and one_cpu["max_num_batched_tokens"] >= 400
    two_gpus = vllm_engine.engine_kwargs(cfg, "/m", 1, 2, cuda=True, position_limit=256)
    assert two_gpus["max_model_len"] == 256  # capped at the model's positions
    assert two_gpus["distributed_executor_backend"] == "external_launcher" and two_gpus["seed"] == 1
    assert two_gpus["gpu_memory_utilization"] == 0.4 and two_gpus["enable_sleep_mode"]
    assert "enable_chunked_prefill" not in two_gpus  # vLLM's own scheduling on GPUs


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_engine_names_the_install():
    from gpgrl.rollout.vllm_engine import import_vllm

    with pytest.raises(ConfigError, match="make install-vllm"):
        import_vllm()


def test_rollout_engine_keys_are_validated():
    assert load_config(None, ["rollout.engine=vllm", "rollout.importance_cap=2"]).rollout.importance_cap == 2
    with pytest.raises(ConfigError, match="rollout.engine='sglang' is not one of"):
        load_config(None, ["rollout.engine=sglang"])
    with pytest.raises(ConfigError, match="needs rollout.engine=vllm and a cap >= 1"):
        load_config(None, ["rollout.importance_cap=2"])
    with pytest.raises(ConfigError, match="needs rollout.engine=vllm and a cap >= 1"):
        load_config(None, ["rollout.engine=vllm", "rollout.importance_cap=0.5"])
    with pytest.raises(ConfigError, match="stop_after_answer is gpgrl's own sampler's"):
        load_config(None, ["rollout.engine=vllm", "rollout.stop_after_answer=true"])
    with pytest.raises(ConfigError, match="vllm_gpu_memory_utilization=1.5 must be in"):
        load_config(None, ["rollout.vllm_gpu_memory_utilization=1.5"])


def test_the_mismatch_statistics_and_the_correction_of_engine_samples():
    from gpgrl.rollout import Sample
    from gpgrl.trainer import sampler_correction

    def sample(engine_logp):
        ids = torch.arange(len(engine_logp))
        return Sample(ids, ids, "", False, None, torch.tensor(engine_logp))

    samples = [sample([-1.0, -2.0]), sample([-0.5])]
    logp = torch.tensor([[-1.5, -2.0], [-0.5, 9.0]])  # [B, Lc]; row 1's second token is padding
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    run = SimpleNamespace(cfg=load_config(None, ["rollout.engine=vllm", "rollout.importance_cap=2"]))
    weights, stats = sampler_correction(run, samples, logp, mask)
    assert float(stats["sampler_logprob_diff"]) == pytest.approx(0.5 / 3)  # |-1.5 - -1.0| over 3 real tokens
    assert float(stats["sampler_logprob_diff_max"]) == pytest.approx(0.5)
    assert torch.allclose(weights[:, 0], torch.tensor([float(torch.exp(torch.tensor(-0.5))), 1.0]))
    off = SimpleNamespace(cfg=load_config(None, ["rollout.engine=vllm"]))
    assert sampler_correction(off, samples, logp, mask)[0] is None
    plain = [Sample(s.prompt_ids, s.completion_ids, "", False) for s in samples]
    assert sampler_correction(off, plain, logp, mask) == (None, {})
