"""Vision-language processors that work without torchvision.

transformers picks PIL image processors by itself when torchvision is absent (`Qwen2VLImageProcessorPil`,
`Idefics3ImageProcessorPil`, ...), but the Qwen2-VL, Qwen2.5-VL and SmolVLM processors also want a video processor,
which needs torchvision: `AutoProcessor.from_pretrained` then fails ("Can't load video processor"), and
`video_processor=None` fails too. gpgrl trains on images only, so it uses subclasses without the video part
(`ProcessorMixin` takes its attributes from the `__init__` signature). Owns those subclasses and `load_processor`,
which loads any image-text-to-text processor from a directory or a hub id, falling back to the subclass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor


class Qwen2VLProcessorNoVideo(Qwen2VLProcessor):
    """Qwen2VLProcessor without its video processor (images only; no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLProcessorNoVideo(Qwen2_5_VLProcessor):  # noqa: N801 - the transformers class name plus a suffix
    """Qwen2_5_VLProcessor without its video processor (images only; no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class SmolVLMProcessorNoVideo(SmolVLMProcessor):
    """SmolVLMProcessor without its video processor (images only; no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_len=image_seq_len, chat_template=chat_template,
                         **kwargs)


NO_VIDEO: dict[str, type[ProcessorMixin]] = {
    "Qwen2VLProcessor": Qwen2VLProcessorNoVideo, "Qwen2_5_VLProcessor": Qwen2_5_VLProcessorNoVideo,
    "SmolVLMProcessor": SmolVLMProcessorNoVideo,
    **{cls.__name__: cls for cls in (Qwen2VLProcessorNoVideo, Qwen2_5_VLProcessorNoVideo, SmolVLMProcessorNoVideo)},
}
"""Processor class name (as saved in a checkpoint) -> the class gpgrl builds instead."""


def _is_vision_processor(obj: Any) -> bool:
    return isinstance(obj, ProcessorMixin) and getattr(obj, "image_processor", None) is not None


def _saved_processor_class(source: str, local_only: bool) -> str:
    """The processor class a checkpoint names (processor_config.json, else tokenizer_config.json)."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        try:
            from transformers.utils import cached_file

            path = cached_file(source, name, local_files_only=local_only, _raise_exceptions_for_missing_entries=False)
        except OSError:
            path = None
        if path is not None:
            value = json.loads(Path(path).read_text()).get("processor_class")
            if value:
                return str(value)
    return ""


def _processor_kwargs(source: str, local_only: bool) -> dict[str, Any]:
    """Extra processor settings saved beside the parts (e.g. SmolVLM's image_seq_len)."""
    from transformers.utils import cached_file

    path = cached_file(source, "processor_config.json", local_files_only=local_only,
                       _raise_exceptions_for_missing_entries=False)
    if path is None:
        return {}
    saved = json.loads(Path(path).read_text())
    return {k: v for k, v in saved.items() if k in ("image_seq_len",)}


def _from_parts(source: str, local_only: bool, first_error: Exception | None) -> ProcessorMixin:
    name = _saved_processor_class(source, local_only)
    cls = NO_VIDEO.get(name) or getattr(transformers, name, None)
    if cls is None or not issubclass(cls, ProcessorMixin):
        raise ValueError(f"{source!r} names no known image-text processor (processor_class {name!r}); "
                         f"AutoProcessor said: {first_error}")
    image_processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    template = getattr(tokenizer, "chat_template", None)
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=template,
               **_processor_kwargs(source, local_only))


def load_processor(source: str, local_only: bool) -> ProcessorMixin:
    """The image-text processor of `source`: AutoProcessor when it works without torchvision, else the checkpoint's
    processor class rebuilt from its image processor and tokenizer without the video part."""
    error: Exception | None = None
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
        if _is_vision_processor(processor):
            return processor
    except (OSError, ValueError, AttributeError, ImportError, TypeError) as err:
        error = err
    return _from_parts(source, local_only, error)
