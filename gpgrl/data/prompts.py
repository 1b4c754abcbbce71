"""Prompt rendering: an example's chat messages, with image blocks for vision-language models.

A conversational prompt is a list of {role, content} messages; a content is text, or (vision-language data) a
list of parts `{"type": "text", "text": ...}` and `{"type": "image"}`. `chat_messages` applies data.prompt_template
to the last user message and adds data.system_prompt; with `image_blocks` every message keeps (or gets) a list of
parts, and an example whose messages place no image block gets one per image before the text of its first user
message (as TRL does). `render_prompt` applies a tokenizer's or processor's chat template to them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

IMAGE_PART = {"type": "image"}
PLACEHOLDER = re.compile(r"<img>(.*?)</img>|<image>", re.DOTALL)
"""Image markers inside message text: LLaVA's `<image>` (the row's next image) and Qwen-VL's `<img>path</img>`
(that file)."""


def is_image_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "image"


def content_text(content: Any) -> str:
    """The text of a message content: the content itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if not is_image_part(part))


def image_blocks(messages: Sequence[Mapping[str, Any]]) -> int:
    """How many `{"type": "image"}` parts the messages place."""
    return sum(is_image_part(part) for m in messages if not isinstance(m["content"], str) for part in m["content"])


def split_placeholders(text: str) -> list[dict[str, Any]]:
    """Text with `<image>` / `<img>path</img>` markers as parts; an `<img>` part keeps its path under "path".

    >>> parts = split_placeholders("<img>a.png</img> Find it. <image> and")
    >>> [p.get("path") or p.get("text") or "<image>" for p in parts]
    ['a.png', ' Find it. ', '<image>', ' and']
    """
    parts: list[dict[str, Any]] = []
    at = 0
    for match in PLACEHOLDER.finditer(text):
        if match.start() > at:
            parts.append({"type": "text", "text": text[at:match.start()]})
        parts.append({"type": "image", "path": match.group(1).strip()} if match.group(1) is not None
                     else dict(IMAGE_PART))
        at = match.end()
    if at < len(text):
        parts.append({"type": "text", "text": text[at:]})
    return parts


def _as_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [dict(part) for part in content]


def _with_template(content: Any, template: str) -> Any:
    """The content with `template` applied to its text ({question} = the text, stripped when the content is a list
    of parts; image parts stay in place)."""
    if isinstance(content, str):
        return template.replace("{question}", content)
    text = template.replace("{question}", content_text(content).strip())
    parts, placed = [], False
    for part in content:
        if is_image_part(part):
            parts.append(dict(part))
        elif not placed:
            parts.append({"type": "text", "text": text})
            placed = True
    return parts if placed else [*parts, {"type": "text", "text": text}]


def chat_messages(example: Any, system_prompt: str, template: str, with_images: bool = False) -> list[dict[str, Any]]:
    """The messages of a prompt: the template applied to the (last) user message, the system prompt first; with
    `with_images`, list contents with one image block per image of the example."""
    messages = [dict(m) for m in example.messages] or [{"role": "user", "content": example.question}]
    messages[-1]["content"] = _with_template(messages[-1]["content"], template)
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    if not with_images:
        return messages
    messages = [{**m, "content": _as_parts(m["content"])} for m in messages]
    if image_blocks(messages) == 0 and example.images:
        user = next(m for m in messages if m["role"] == "user")
        user["content"] = [dict(IMAGE_PART) for _ in example.images] + user["content"]
    return messages


def _is_template_error(err: Exception) -> bool:
    try:
        from jinja2.exceptions import TemplateError
    except ImportError:  # pragma: no cover - jinja2 ships with transformers' chat templates
        return False
    return isinstance(err, TemplateError)


def _system_into_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold a leading system message into the next user message (for templates without a system role)."""
    if not messages or messages[0]["role"] != "system" or len(messages) < 2:
        return messages
    system, rest = messages[0], [dict(m) for m in messages[1:]]
    user = next(i for i, m in enumerate(rest) if m["role"] == "user")
    prefix = f"{content_text(system['content'])}\n\n"
    content = rest[user]["content"]
    if isinstance(content, str):
        rest[user]["content"] = prefix + content
    else:
        rest[user]["content"] = [{"type": "text", "text": prefix}, *content]
    return rest


def render_prompt(tokenizer: Any, example: Any, system_prompt: str, template: str = "{question}",
                  with_images: bool = False, response_prefix: str = "") -> str:
    """The prompt text for `example`: chat template with an optional system message and the generation prompt.

    The user message is `template` with `{question}` replaced by the question (plain replacement, so LaTeX
    braces such as `\\boxed{}` in the template are kept). A conversational example keeps its messages, with the
    template applied to the last (user) message and the system prompt added first unless it has one. An empty
    `system_prompt` adds no system message. If the template rejects the system role (it raises a template error,
    as Gemma-style templates do), the system message is prepended to the first user message instead, separated
    by a blank line. `tokenizer` may be a processor (with `with_images`: image blocks, see `chat_messages`).
    `response_prefix` (data.response_prefix) is appended after the generation prompt: the assistant's reply
    starts with it, and the model generates the rest (see `scored_text`).
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template: use an instruct/chat model for model.name "
                         "or set tokenizer.chat_template")
    return _rendered(tokenizer, chat_messages(example, system_prompt, template, with_images)) + response_prefix


def scored_text(response_prefix: str, completion: str) -> str:
    """What rewards and evaluation score: the reply as the model's reader sees it, the fixed prefix
    (data.response_prefix, part of the prompt, never sampled or trained on) followed by the generated text.

    >>> scored_text("The final answer is", " 75.")
    'The final answer is 75.'
    """
    return response_prefix + completion


def _rendered(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    if messages[0]["role"] != "system":
        return _apply(tokenizer, messages)
    try:
        return _apply(tokenizer, messages)
    except Exception as err:
        if not _is_template_error(err):
            raise
    return _apply(tokenizer, _system_into_user(messages))


def _apply(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
