"""Vision-language models: the built-ins of three families load offline with processors that need no torchvision;
LoRA goes on the language model only; the eye freezes or trains as configured; pixel limits reach the processor;
final/ reloads; SmolLM2 with an eye keeps SmolLM2's text logits."""

import dataclasses

import pytest
import torch
from transformers import AutoModelForImageTextToText

from gpgrl.config import ConfigError, ModelConfig, build_config
from gpgrl.models import ModelLoadError, load_policy, load_processing, resolve_model_source, save_final
from gpgrl.models.kinds import language_model_prefix, model_kind, vision_parameters
from gpgrl.models.processors import NO_VIDEO, load_processor

FAMILIES = ["tiny-random-qwen2-vl", "tiny-random-qwen2.5-vl", "tiny-random-idefics3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("vision-cache"))


def cfg(cache: str, name: str = "tiny-random-qwen2-vl", **kw) -> ModelConfig:
    return ModelConfig(name=name, cache_dir=cache, **kw)


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_loads_offline_as_a_vision_model_with_a_processor(cache, name):
    model, processor = load_policy(cfg(cache, name), 0)
    source = resolve_model_source(cfg(cache, name))
    assert model_kind(source, True).name == "vision"
    assert processor.image_processor is not None and getattr(processor, "video_processor", None) is None
    assert type(processor.image_processor).__name__.endswith("Pil")  # PIL backend: no torchvision
    assert processor.tokenizer.padding_side == "left" and processor.chat_template
    tower, projector = vision_parameters(model)
    assert tower and projector and all(p.requires_grad for p in tower + projector)
    assert model_kind(resolve_model_source(ModelConfig(name="tiny-random", cache_dir=cache)), True).name == "text"


def test_the_no_video_processor_is_rebuilt_from_its_parts(cache):
    source = resolve_model_source(cfg(cache))
    processor = load_processor(source, True)
    assert type(processor) is NO_VIDEO["Qwen2VLProcessor"]
    assert load_processing(cfg(cache)).image_processor is not None


def test_a_smolvlm_processor_without_video_saves_and_reloads(tmp_path):
    from PIL import Image
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    from gpgrl.models.vision import IDEFICS3_TOKENS, _tiny_tokenizer, chat_template

    tokenizer = _tiny_tokenizer(IDEFICS3_TOKENS)
    tokenizer.chat_template = chat_template("<image>")
    image_processor = SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": 64},
                                               max_image_size={"longest_edge": 64})
    processor = NO_VIDEO["SmolVLMProcessor"](image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                             chat_template=tokenizer.chat_template)
    processor.save_pretrained(tmp_path)
    reloaded = load_processor(str(tmp_path), True)
    assert type(reloaded) is NO_VIDEO["SmolVLMProcessor"] and reloaded.image_seq_len == 4
    out = reloaded(text=["<image>What is it?"], images=[[Image.new("RGB", (64, 64))]], return_tensors="pt")
    assert out["pixel_values"].shape == (1, 1, 3, 64, 64)


def test_bfloat16_vision_models_sample_and_score(cache):
    from PIL import Image

    from gpgrl.data import Example
    from gpgrl.data.images import in_memory
    from gpgrl.rollout import SamplingParams, collate, generate, make_encoder, token_logprobs

    model, processor = load_policy(cfg(cache, dtype="bfloat16"), 0)
    assert next(model.parameters()).dtype == torch.bfloat16
    encoder = make_encoder(processor, model, "", "{question}")
    prompt = encoder.encode(Example("q", "a", images=(in_memory(Image.new("RGB", (56, 56), "red"), "x"),)))
    samples = generate(model, encoder, [prompt], 2, SamplingParams(4, 1.0, shared_prefill=True))[0]
    logp = token_logprobs(model, collate(samples, encoder.pad_id, suppressed_ids=encoder.suppressed_ids), 1.0)
    assert logp.dtype == torch.float32 and torch.isfinite(logp).all()


def test_lora_goes_on_the_language_model_only_and_the_eye_keeps_training(cache):
    model, _ = load_policy(cfg(cache, lora_r=4), 0)
    prefix = language_model_prefix(model.get_base_model())
    adapted = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
    assert adapted and all(f".{prefix}." in f".{n}" for n in adapted)
    tower, projector = vision_parameters(model)
    assert all(p.requires_grad for p in tower + projector)
    frozen, _ = load_policy(cfg(cache, lora_r=4, freeze_vision=True), 0)
    tower, projector = vision_parameters(frozen)
    assert not any(p.requires_grad for p in tower) and all(p.requires_grad for p in projector)
    with pytest.raises(ModelLoadError, match="names no linear layer"):
        load_policy(cfg(cache, lora_r=4, lora_target_modules="no_such_proj"), 0)


def test_freeze_vision_in_full_fine_tuning_keeps_the_projector(cache):
    model, _ = load_policy(cfg(cache, "tiny-random-idefics3", freeze_vision=True), 0)
    tower, projector = vision_parameters(model)
    assert not any(p.requires_grad for p in tower) and all(p.requires_grad for p in projector)
    assert any(p.requires_grad for n, p in model.named_parameters() if "text_model" in n)


def test_vision_options_on_a_text_model_are_refused(cache):
    with pytest.raises(ModelLoadError, match="model.name='tiny-random' is a text model"):
        load_policy(ModelConfig(name="tiny-random", cache_dir=cache, freeze_vision=True), 0)
    from gpgrl.trainer import parameter_groups

    model, _ = load_policy(ModelConfig(name="tiny-random", cache_dir=cache), 0)
    with pytest.raises(ConfigError, match="optim.vision_lr=0.001 applies to vision-language models"):
        parameter_groups(model, build_config({}, ["model.name=tiny-random", "optim.vision_lr=1e-3"]))


def test_vision_lr_puts_the_eye_in_its_own_group(cache):
    from gpgrl.trainer import parameter_groups

    model, _ = load_policy(cfg(cache), 0)
    groups = parameter_groups(model, build_config({}, ["optim.lr=1e-5", "optim.vision_lr=1e-3"]))
    tower, projector = vision_parameters(model)
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in tower + projector}
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_pixel_limits_set_the_visual_tokens_and_are_refused_where_they_do_not_apply(cache):
    from PIL import Image

    def tokens(processor):
        out = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[[Image.new("RGB", (112, 112))]],
                        return_tensors="pt")
        return int(out["image_grid_thw"].prod()) // 4

    assert tokens(load_processing(cfg(cache))) == 16  # the built-in's own limit: 28 * 28 * 16 pixels
    assert tokens(load_processing(cfg(cache, image_max_pixels=28 * 28 * 4))) == 4
    with pytest.raises(ModelLoadError, match="resize by pixel count"):
        load_processing(cfg(cache, "tiny-random-idefics3", image_max_pixels=1000))
    with pytest.raises(ConfigError, match="exceeds"):
        ModelConfig(image_min_pixels=5000, image_max_pixels=100)


def test_final_reloads_with_from_pretrained_and_through_gpgrl(cache, tmp_path):
    model, processor = load_policy(cfg(cache, lora_r=4), 0)
    save_final(model, processor, tmp_path / "final", "card")
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "final")
    assert not any("lora" in n for n in plain.state_dict())
    reloaded, again = load_policy(ModelConfig(name=str(tmp_path / "final")), 0)
    assert again.image_processor is not None and (tmp_path / "final" / "README.md").read_text() == "card\n"


def test_gradient_checkpointing_trains_the_eye(cache):
    from PIL import Image

    from gpgrl.data import Example
    from gpgrl.data.images import in_memory
    from gpgrl.rollout import Sample, collate, make_encoder, token_logprobs

    model, processor = load_policy(cfg(cache, gradient_checkpointing=True), 0)
    encoder = make_encoder(processor, model, "", "{question}")
    prompt = encoder.encode(Example("q", "a", images=(in_memory(Image.new("RGB", (56, 56), "red"), "x"),)))
    sample = Sample(prompt.ids, torch.tensor([5, 6, 7]), "", False, prompt.vision)
    token_logprobs(model, collate([sample], encoder.pad_id), 1.0).sum().backward()
    tower, _ = vision_parameters(model)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower)


@pytest.mark.slow
def test_smollm2_with_an_eye_keeps_smollm2s_text_logits():
    vision, vision_processor = load_policy(ModelConfig(name="smollm2-135m-vision"), 0)
    text, tokenizer = load_policy(ModelConfig(name="smollm2-135m-instruct"), 0)
    messages = [{"role": "user", "content": "What is 12 + 35?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert vision_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == rendered
    ids = tokenizer(rendered, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        expected = text.eval()(input_ids=ids).logits  # [1, L, 49152]
        got = vision.eval()(input_ids=ids).logits  # [1, L, 49156]: four vision tokens added
    assert torch.equal(got[..., : expected.shape[-1]], expected)
    tower, projector = vision_parameters(vision)
    assert sum(p.numel() for p in tower + projector) < 2_000_000  # a small eye on a 135M language model
    assert dataclasses.is_dataclass(ModelConfig)
