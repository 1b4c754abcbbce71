"""Prompts: the training and held-out splits, how a prompt is rendered, and the order prompts are drawn in.

Owns `Example` (one question with its gold answer, its eval group and the extra columns handed to reward
functions), `load_splits` (train/eval splits of a reasoning-gym task or of a dataset read by `gpgrl.sources`;
the eval split never shares a question with training), `render_prompt` (chat-template rendering of plain and
conversational prompts) and `PromptQueue` (the seeded, resumable prompt stream that the training loop and GPG's
resampling draw from).

reasoning-gym generators are deterministic per (seed, index): most build item `i` from `Random(seed + i)`.
Two datasets whose seeds are close therefore share items, so the eval seed is derived by hashing (not by
adding a small offset), and the eval split is still de-duplicated against training by question text. For
datasets the eval split is kept whole (a benchmark stays a benchmark) and training rows whose question also
occurs in it are dropped.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import logging
import random
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpgrl.config import ConfigError, DataConfig
from gpgrl.data.images import ImageRef, in_memory, read_images
from gpgrl.data.prompts import PLACEHOLDER, content_text, image_blocks, is_image_part, split_placeholders
from gpgrl.data.shapes import check_task, draw_item, palette_of
from gpgrl.data.shapes import labels as shape_labels
from gpgrl.data.sources import Row, Table, read_table

_EVAL_ATTEMPTS_PER_ITEM = 20
"""The eval split draws at most this many candidates per requested item (plus a fixed margin)."""
_EVAL_ATTEMPTS_MARGIN = 1000
_MAX_GENERATOR_SEED = 2**31 - 1
"""Derived seeds stay below 2**31 so that `seed + index` fits generators that use numpy's 32-bit seeds."""
RESERVED_COLUMNS = ("answer", "prompts", "completions", "completion_lengths", "completion_ids", "trainer_state")
"""Names a dataset column cannot keep in `Example.columns`: reward functions receive these from the caller."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One prompt: the user message, its gold answer and the columns reward functions receive.

    For reasoning-gym tasks `columns` holds `entry` (the full reasoning-gym entry: question, answer,
    metadata) and `task` (the task name); for datasets, every column of the row except the reserved names
    (RESERVED_COLUMNS). `index` is the row number within its split, `group` the value that groups items in the
    eval report (reasoning-gym: the task; datasets: data.group_column). `messages` is set for conversational
    prompts: the {role, content} messages (a content is text or a list of text and image parts), whose last (user)
    message holds `question`. `images` are the row's images (data.image_column; the shapes tasks draw one), in
    the order the prompt's image blocks take them.
    """

    question: str
    answer: str
    columns: Mapping[str, Any] = field(default_factory=dict, hash=False)
    index: int = 0
    group: str = ""
    messages: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    images: tuple[ImageRef, ...] = field(default=(), hash=False)

    @property
    def key(self) -> str:
        """What makes two items the same: the normalised question and the content of the images."""
        digests = ",".join(image.digest for image in self.images)
        return f"{normalise_question(self.question)}|{digests}" if digests else normalise_question(self.question)


# ---------------------------------------------------------------- seeds and normalisation


def derive_seed(*parts: object, bound: int = 2**63 - 1) -> int:
    """A deterministic seed in [0, bound) from any printable parts (stable across processes and runs)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % bound


def normalise_question(text: str) -> str:
    """Comparison key for questions: Unicode NFKC, case-folded, all whitespace removed.

    Removing whitespace makes 'Calculate 3+4.' and 'Calculate 3 + 4.' the same question, which errs on
    the side of keeping near-duplicates out of the eval split.
    """
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


# ---------------------------------------------------------------- reasoning-gym access


def _registry() -> Mapping[str, Any]:
    """reasoning-gym's task registry: name -> (dataset class, config class); filled on import."""
    import reasoning_gym

    return reasoning_gym.factory.DATASETS


def _check_task(task: str) -> None:
    names = sorted(_registry())
    if task in names:
        return
    close = difflib.get_close_matches(task, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"known tasks: {', '.join(names)}"
    raise ConfigError(f"data.task={task!r} is not a reasoning-gym task ({hint})")


def _accepted_kwargs(task: str) -> list[str]:
    config_cls = _registry()[task][1]
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in ("seed", "size")]


def _create(task: str, kwargs: Mapping[str, Any], size: int, seed: int) -> Any:
    """A reasoning-gym dataset; generator errors become ConfigErrors that name data.task_kwargs."""
    import reasoning_gym

    reserved = sorted({"seed", "size"} & set(kwargs))
    if reserved:
        raise ConfigError(f"data.task_kwargs sets {', '.join(reserved)}: remove it (use data.seed, "
                          "data.train_size and data.eval_size instead)")
    try:
        return reasoning_gym.create_dataset(task, size=size, seed=seed, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as err:
        raise ConfigError(f"data.task_kwargs={dict(kwargs)!r} is rejected by reasoning-gym task {task!r}: "
                          f"{err or type(err).__name__}. Accepted keys: {', '.join(_accepted_kwargs(task))}"
                          ) from err


def _entries(dataset: Any, task: str, kwargs: Mapping[str, Any], split: str) -> Iterator[dict[str, Any]]:
    """Yield the dataset's entries; a failing or malformed item names the split, row and data.task_kwargs."""
    for i in range(len(dataset)):
        try:
            entry = dataset[i]
        except Exception as err:
            raise ConfigError(f"reasoning-gym task {task!r} failed to generate {split} row {i} with "
                              f"data.task_kwargs={dict(kwargs)!r}: {err!r}; change data.task_kwargs") from err
        if not isinstance(entry, Mapping) or not isinstance(entry.get("question"), str):
            raise ConfigError(f"reasoning-gym task {task!r} produced {split} row {i} without a string "
                              f"'question': {entry!r}")
        yield dict(entry)


def _example(entry: dict[str, Any], task: str, index: int) -> Example:
    answer = entry.get("answer")
    group = (entry.get("metadata") or {}).get("source_dataset") or task
    return Example(question=entry["question"], answer="" if answer is None else str(answer),
                   columns={"entry": entry, "task": task}, index=index, group=str(group))


# ---------------------------------------------------------------- splits


def _eval_examples(cfg: DataConfig, train_keys: set[str]) -> list[Example]:
    """eval_size items whose questions appear neither in training nor twice in eval."""
    seen = set(train_keys)
    out: list[Example] = []
    budget = _EVAL_ATTEMPTS_PER_ITEM * cfg.eval_size + _EVAL_ATTEMPTS_MARGIN
    attempts, round_ = 0, 0
    while len(out) < cfg.eval_size and attempts < budget:
        seed = derive_seed(cfg.seed, "eval", round_, bound=_MAX_GENERATOR_SEED)
        size = min(cfg.eval_size, budget - attempts)
        dataset = _create(cfg.task, cfg.task_kwargs, size, seed)
        for entry in _entries(dataset, cfg.task, cfg.task_kwargs, "eval"):
            attempts += 1
            key = normalise_question(entry["question"])
            if key not in seen:
                seen.add(key)
                out.append(_example(entry, cfg.task, len(out)))
                if len(out) == cfg.eval_size:
                    break
        round_ += 1
    if len(out) < cfg.eval_size:
        raise ConfigError(
            f"only {len(out)} of data.eval_size={cfg.eval_size} held-out questions of task {cfg.task!r} are "
            f"new (not among the {len(train_keys)} distinct training questions) after {attempts} attempts: "
            "the task space is too small. Lower data.eval_size (or data.train_size), or widen "
            "data.task_kwargs (e.g. more digits or terms)")
    return out


def _reasoning_gym_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    _check_task(cfg.task)
    kwargs = dict(cfg.task_kwargs)
    train_ds = _create(cfg.task, kwargs, cfg.train_size, cfg.seed)
    train = [_example(e, cfg.task, i) for i, e in enumerate(_entries(train_ds, cfg.task, kwargs, "train"))]
    train_keys = {normalise_question(ex.question) for ex in train}
    return train, _eval_examples(cfg, train_keys)


# ---------------------------------------------------------------- synthetic visual tasks (data.source=shapes)


def _shape_example(cfg: DataConfig, seed: int, index: int) -> Example:
    task = cfg.task
    item = draw_item(task, seed, cfg.image_size, cfg.shape_colors)
    image = in_memory(item.image, f"shapes {task} item {index}")
    columns: dict[str, Any] = {"task": f"shapes/{task}"}
    candidates = shape_labels(task, palette_of(cfg.shape_colors))
    if candidates is not None:
        columns["labels"] = list(candidates)
    return Example(item.question, item.answer, columns, index, f"shapes/{task}", (), (image,))


def _shapes_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    """data.train_size training items and data.eval_size held-out items whose images occur neither in training
    nor twice in eval (drawn from seeds derived from data.seed, within a bounded number of attempts)."""
    check_task(cfg.task, cfg.image_size, cfg.shape_colors)
    seed = functools.partial(derive_seed, cfg.seed, "shapes", cfg.task)
    train = [_shape_example(cfg, seed("train", i), i) for i in range(cfg.train_size)]
    seen = {ex.images[0].digest for ex in train}
    evals: list[Example] = []
    budget = _EVAL_ATTEMPTS_PER_ITEM * cfg.eval_size + _EVAL_ATTEMPTS_MARGIN
    for attempt in range(budget):
        if len(evals) == cfg.eval_size:
            break
        ex = _shape_example(cfg, seed("eval", attempt), len(evals))
        if ex.images[0].digest not in seen:
            seen.add(ex.images[0].digest)
            evals.append(ex)
    if len(evals) < cfg.eval_size:
        raise ConfigError(f"only {len(evals)} of data.eval_size={cfg.eval_size} held-out images of shapes task "
                          f"{cfg.task!r} are new after {budget} attempts: lower data.eval_size or raise "
                          "data.image_size")
    return train, evals


# ---------------------------------------------------------------- dataset rows to examples


def _column(row: Row, key: str, column: str) -> Any:
    """The row's value in `column`; a missing column names the config key, the row and the columns there are."""
    if column not in row.values:
        raise ConfigError(f"{key}={column!r}: no such column in {row.where} (its columns: "
                          f"{', '.join(map(str, row.values)) or 'none'}); set {key} to one of them")
    return row.values[column]


def _is_part(part: Any) -> bool:
    return isinstance(part, Mapping) and (part.get("type") == "image" or (
        part.get("type") == "text" and isinstance(part.get("text"), str)))


def _valid_content(content: Any) -> bool:
    return isinstance(content, str) or (isinstance(content, list) and all(_is_part(p) for p in content))


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system"}


def _sharegpt(message: Any) -> Any:
    """A ShareGPT / LLaVA message {from: human|gpt|..., value} as {role, content}; anything else unchanged."""
    if isinstance(message, Mapping) and "from" in message and "value" in message and "role" not in message:
        return {"role": _SHAREGPT_ROLES.get(str(message["from"]).lower(), str(message["from"])),
                "content": message["value"]}
    return message


def _messages(value: list[Any], row: Row, column: str) -> tuple[dict[str, Any], ...]:
    """A conversational prompt: {role, content} (or ShareGPT {from, value}) messages ending with the user's; a
    content is text or a list of {"type": "text", "text": ...} and {"type": "image"} parts."""
    messages = []
    for i, message in enumerate(map(_sharegpt, value)):
        ok = isinstance(message, Mapping) and isinstance(message.get("role"), str) and \
            _valid_content(message.get("content"))
        if not ok:
            raise ConfigError(f"{row.where}: message {i} of column {column!r} is {message!r}; a conversational "
                              "prompt is a list of {'role': ..., 'content': ...} messages, whose content is text "
                              "or a list of {'type': 'text', 'text': ...} and {'type': 'image'} parts")
        content = message["content"]
        messages.append({"role": message["role"], "content": content if isinstance(content, str) else
                         [dict(part) for part in content]})
    if not messages or messages[-1]["role"] != "user":
        raise ConfigError(f"{row.where}: the messages in column {column!r} must end with a 'user' message (the "
                          "prompt the model answers)")
    return tuple(messages)


def _gold_message(value: list[Any], row: Row, cfg: DataConfig) -> tuple[list[Any], str | None]:
    """With data.answer_column='', the conversation's final assistant message is the gold answer: (the prompt
    messages before it, its text); otherwise (the messages, None)."""
    if cfg.answer_column:
        return value, None
    last = _sharegpt(value[-1]) if value else None
    if not (isinstance(last, Mapping) and last.get("role") == "assistant" and isinstance(last.get("content"), str)):
        raise ConfigError(f"{row.where}: data.answer_column='' takes the gold answer from the final assistant message "
                          f"of column {cfg.prompt_column!r}, which has none: name the answer column instead")
    return value[:-1], last["content"]


def _with_placeholders(messages: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """Messages whose text holds `<image>` / `<img>path</img>` markers, with those markers as image parts."""
    if not any(PLACEHOLDER.search(content_text(m["content"])) for m in messages):
        return messages
    out = []
    for m in messages:
        parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        split = [q for p in parts for q in (split_placeholders(p["text"]) if p.get("type") == "text" else [p])]
        out.append({"role": m["role"], "content": split})
    return tuple(out)


def _prompt(row: Row, cfg: DataConfig) -> tuple[str, tuple[dict[str, Any], ...], str | None]:
    """(question text, messages, gold from the conversation or None) of a row: plain text, or a message list whose
    last user message is the question. Image markers in the text become image parts."""
    column = cfg.prompt_column
    value = _column(row, "data.prompt_column", column)
    if isinstance(value, str) and PLACEHOLDER.search(value):
        value = [{"role": "user", "content": value}]
    if isinstance(value, list):
        value, gold = _gold_message(value, row, cfg)
        messages = _with_placeholders(_messages(value, row, column))
        question = content_text(messages[-1]["content"]).strip()
        if not question:
            raise ConfigError(f"{row.where}: the last user message in column {column!r} has no text")
        return question, messages, gold
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{row.where}: data.prompt_column {column!r} is {value!r}; expected non-empty text or a "
                          "list of messages")
    if not cfg.answer_column:
        raise ConfigError(f"{row.where}: data.answer_column='' needs conversations in column {column!r} (the final "
                          "assistant message is the gold answer); this row holds plain text: name the answer column")
    return value, (), None


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _is_box(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _answer_text(value: Any, row: Row, cfg: DataConfig) -> str:
    """The gold answer as text, read according to data.answer_format."""
    from gpgrl.rewards import last_boxed  # local: rewards imports the verifier, which data does not need otherwise
    from gpgrl.rewards.answers import tagged_answer

    column = cfg.answer_column
    if _is_box(value):
        return "[{}]".format(", ".join(_number_text(v) for v in value))
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{row.where}: data.answer_column {column!r} is {value!r}; expected text, a number or a "
                          "box [x1, y1, x2, y2]")
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if cfg.answer_format == "gsm8k":
        if "####" not in text:
            raise ConfigError(f"{row.where}: data.answer_format=gsm8k but column {column!r} has no '####' final "
                              f"answer ({text[:80]!r}); use data.answer_format=plain")
        text = _THOUSANDS.sub("", text.rsplit("####", 1)[1])
    elif cfg.answer_format == "tagged":
        text = tagged_answer(text) or text
    elif cfg.answer_format == "boxed":
        boxed = last_boxed(text)
        if boxed is None:
            raise ConfigError(f"{row.where}: data.answer_format=boxed but column {column!r} has no \\boxed{{...}} "
                              f"({text[-80:]!r}); use data.answer_format=plain")
        text = boxed
    if not text.strip():
        raise ConfigError(f"{row.where}: the gold answer in column {column!r} is empty")
    return text.strip()


def _column_images(row: Row, cfg: DataConfig, base: Path) -> tuple[Any, ...]:
    if cfg.image_column not in row.values:
        if cfg.image_column != DataConfig.__dataclass_fields__["image_column"].default:
            _column(row, "data.image_column", cfg.image_column)  # a column asked for by name must exist
        return ()
    return read_images(row.values[cfg.image_column], row.where, cfg.image_column, base)


def _row_images(row: Row, cfg: DataConfig, base: Path,
                messages: tuple[dict[str, Any], ...]) -> tuple[tuple[Any, ...], tuple[dict[str, Any], ...]]:
    """The row's images in the order the prompt's image blocks take them (an `<img>path</img>` block its own file,
    the other blocks the image column's images), checked to decode; and the messages without the paths."""
    column = list(_column_images(row, cfg, base))
    blocks = image_blocks(messages)
    inline = sum(is_image_part(p) and "path" in p for m in messages if isinstance(m["content"], list)
                 for p in m["content"])
    if blocks and blocks - inline != len(column):
        raise ConfigError(f"{row.where}: the prompt in column {cfg.prompt_column!r} places {blocks - inline} image "
                          f"blocks for column {cfg.image_column!r}, which holds {len(column)} images: give one image "
                          "per block")
    if not inline:
        return tuple(column), messages
    images, cleaned = [], []
    for m in messages:
        parts = m["content"]
        for part in parts if isinstance(parts, list) else ():
            if is_image_part(part):
                images.extend(read_images(part["path"], row.where, "<img> in the prompt", base) if "path" in part
                              else [column.pop(0)])
        cleaned.append({"role": m["role"], "content": [{"type": "image"} if is_image_part(p) else p for p in parts]
                        if isinstance(parts, list) else parts})
    return tuple(images), tuple(cleaned)


def _row_example(row: Row, cfg: DataConfig, index: int, base: Path) -> Example:
    question, messages, gold = _prompt(row, cfg)
    answer = _answer_text(gold if gold is not None else _column(row, "data.answer_column", cfg.answer_column), row,
                          cfg)
    group = str(_column(row, "data.group_column", cfg.group_column)) if cfg.group_column else ""
    images, messages = _row_images(row, cfg, base, messages)
    columns = {k: v for k, v in row.values.items() if k not in RESERVED_COLUMNS and k != cfg.image_column}
    return Example(question, answer, columns, index, group, messages, images)


def _table_examples(table: Table, cfg: DataConfig) -> list[Example]:
    base = Path(table.base or ".").resolve()
    return [_row_example(row, cfg, i, base) for i, row in enumerate(table.rows)]


def dataset_examples(dataset: Any, cfg: DataConfig, name: str) -> list[Example]:
    """The examples of a dataset given in Python: a path (a data file or a dataset directory, read as
    data.path would be, every row), a `datasets.Dataset`, or a list of dicts; the columns are those data.* names.
    `name` ('train_dataset', 'eval_dataset') appears in errors with the row number."""
    if isinstance(dataset, (str, Path)):
        source = dataclasses.replace(cfg, path=str(dataset), source="auto", subset="", split="train", eval_split="")
        table = read_table(source, "train", name)
    else:
        try:
            rows = [dict(row) for row in dataset]
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{name} must be a path, a datasets.Dataset or a list of dicts (one per row), got "
                              f"{type(dataset).__name__}") from err
        if not rows:
            raise ConfigError(f"{name} has no rows")
        table = Table(name, [Row(row, f"{name} row {i}") for i, row in enumerate(rows, 1)])
    return [dataclasses.replace(ex, index=i) for i, ex in enumerate(_table_examples(table, cfg))]


def given_splits(cfg: DataConfig, train: Any = None, evals: Any = None) -> tuple[list[Example], list[Example]]:
    """Training and held-out examples when a caller gives datasets (data.source=given, set by gpgrl.train when
    datasets are given): a given one is that split; a training set given alone is held out from by a fractional
    data.eval_split (else there is no held-out set). Training rows that occur in the held-out set are dropped, as
    for files. With another data.source, the split not given comes from data.* as `load_splits` reads it."""
    from_config = cfg.resolved_source() != "given"
    train_examples = dataset_examples(train, cfg, "train_dataset") if train is not None else \
        load_splits(cfg)[0] if from_config else []
    if evals is not None:
        eval_examples = dataset_examples(evals, cfg, "eval_dataset")
    elif train is not None and not from_config:
        fraction = cfg.eval_fraction()
        train_examples, eval_examples = _hold_out(train_examples, fraction, cfg.seed) if fraction else \
            (train_examples, [])
    else:
        eval_examples = load_splits(cfg)[1] if from_config else []
    train_examples = _without_overlap(train_examples, eval_examples)
    return ([dataclasses.replace(ex, index=i) for i, ex in enumerate(train_examples)],
            [dataclasses.replace(ex, index=i) for i, ex in enumerate(eval_examples)])


# ---------------------------------------------------------------- dataset splits


def _hold_out(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded random `fraction` of the rows (at least one) for eval, the rest for training; file order kept."""
    order = list(range(len(examples)))
    random.Random(derive_seed(seed, "eval-split")).shuffle(order)
    chosen = set(order[:max(1, round(fraction * len(examples)))])
    return ([ex for i, ex in enumerate(examples) if i not in chosen],
            [ex for i, ex in enumerate(examples) if i in chosen])


def _without_overlap(train: list[Example], evals: list[Example]) -> list[Example]:
    """Training examples that do not occur in eval (same normalised question and, with images, the same images);
    the count dropped is logged."""
    eval_keys = {ex.key for ex in evals}
    kept = [ex for ex in train if ex.key not in eval_keys]
    if len(kept) < len(train):
        images = " with the same images" if any(ex.images for ex in train) else ""
        logger.warning("data: dropped %d of %d training rows whose question also occurs in the eval split%s",
                       len(train) - len(kept), len(train), images)
    return kept


def _dataset_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    fraction = cfg.eval_fraction()
    train = _table_examples(read_table(cfg, cfg.split, "data.split"), cfg) if cfg.split else []
    evals: list[Example] = []
    if fraction is not None:
        train, evals = _hold_out(train, fraction, cfg.seed)
    elif cfg.eval_split:
        evals = _table_examples(read_table(cfg, cfg.eval_split, "data.eval_split"), cfg)
    train = _without_overlap(train, evals)
    return ([dataclasses.replace(ex, index=i) for i, ex in enumerate(train)],
            [dataclasses.replace(ex, index=i) for i, ex in enumerate(evals)])


def load_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    """Training and held-out examples, deterministic for a given config.

    reasoning-gym (data.path empty): `cfg.train_size` items generated with seed `cfg.seed` (duplicates within
    training are kept); eval: `cfg.eval_size` items from seeds derived from `cfg.seed`; any question that also
    occurs in training (compared with `normalise_question`) or earlier in eval is dropped and replaced, within a
    bounded number of attempts.

    Datasets (a file, a Hugging Face dataset, CHAMP): training rows come from data.split, eval rows from the
    data.eval_split split or a seeded fraction of data.split; eval is kept whole and training rows whose question
    occurs in it are dropped. Either list may be empty (data.split or data.eval_split empty).
    Raises ConfigError naming the key to change, and the file and row for bad data.
    """
    source = cfg.resolved_source()
    if source == "given":
        raise ConfigError("data.source=given takes its prompts from the datasets given in Python (gpgrl.train("
                          "train_dataset=..., eval_dataset=...)): give them, or choose another data.source")
    if source == "reasoning_gym":
        return _reasoning_gym_splits(cfg)
    if source == "shapes":
        return _shapes_splits(cfg)
    return _dataset_splits(cfg)


def reward_columns(examples: Sequence[Example], repeat: int = 1) -> dict[str, list[Any]]:
    """Reward-function columns aligned with completions: `answer` plus every key of `Example.columns`.

    Each example's values are repeated `repeat` times (G completions per prompt, in prompt order).
    """
    keys = ["answer", *(k for k in (examples[0].columns if examples else ()) if k != "answer")]
    rows = [ex for ex in examples for _ in range(repeat)]
    return {k: [ex.answer if k == "answer" else ex.columns[k] for ex in rows] for k in keys}


# ---------------------------------------------------------------- the prompt stream


class PromptQueue:
    """Seeded, resumable stream of training examples: a fresh shuffle every epoch.

    Epoch `e` visits every example exactly once, in the order `torch.randperm` gives with a
    `torch.Generator` seeded from `(seed, e)`. `take(n)` crosses epoch boundaries transparently.
    `state_dict()` records (epoch, position); loading it into a queue built from the same examples and
    seed continues with exactly the items the original queue would have produced next.
    """

    def __init__(self, examples: Sequence[Example], seed: int) -> None:
        if not examples:
            raise ValueError("PromptQueue needs at least one training example (check data.train_size, or "
                             "data.split and data.eval_split for a dataset)")
        self._examples = list(examples)
        self._seed = int(seed)
        self._epoch = 0
        self._position = 0
        self._order = self._permutation(0)

    def __len__(self) -> int:
        return len(self._examples)

    @property
    def epoch(self) -> int:
        """Index of the epoch the next item comes from (0-based)."""
        return self._epoch

    @property
    def consumed(self) -> int:
        """Items taken so far, over all epochs."""
        return self._epoch * len(self._examples) + self._position

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derive_seed(self._seed, "prompt-order", epoch))
        return torch.randperm(len(self._examples), generator=generator).tolist()

    def take(self, n: int) -> list[Example]:
        """The next `n` examples (n >= 0), starting a new shuffled epoch whenever one runs out."""
        if n < 0:
            raise ValueError(f"PromptQueue.take(n={n}): n must be >= 0")
        out: list[Example] = []
        while len(out) < n:
            if self._position == len(self._order):
                self._epoch += 1
                self._position = 0
                self._order = self._permutation(self._epoch)
            chunk = self._order[self._position:self._position + n - len(out)]
            out.extend(self._examples[i] for i in chunk)
            self._position += len(chunk)
        return out

    def state_dict(self) -> dict[str, int]:
        """Resumption state (plain ints, JSON-serialisable)."""
        return {"epoch": self._epoch, "position": self._position, "seed": self._seed,
                "num_examples": len(self._examples)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from a `state_dict()`; the queue must hold the same examples and seed as the saved one."""
        n, seed = int(state.get("num_examples", len(self._examples))), int(state.get("seed", self._seed))
        if n != len(self._examples) or seed != self._seed:
            raise ValueError(f"prompt-queue state was saved for {n} examples with seed {seed}, but this "
                             f"queue has {len(self._examples)} examples with seed {self._seed}: resume with "
                             "the same data.* settings and train.seed as the saved run")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= n:
            raise ValueError(f"prompt-queue state has epoch={epoch}, position={position}: expected "
                             f"epoch >= 0 and 0 <= position <= {n}")
        self._epoch, self._position = epoch, position
        self._order = self._permutation(epoch)
