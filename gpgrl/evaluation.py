"""Held-out evaluation: n completions per item, pass@1, unbiased pass@k, majority vote, a per-group breakdown.

Owns `evaluate` (training calls it before and after the run; `gpgrl eval` and `gpgrl.evaluate` through
`run_evaluation`),
the metrics (`pass_at_k`, `majority_vote`), `EvalResult` with its JSON summary, `write_eval` (the summary JSON and
a JSONL of every completion with its rewards) and the summary tables printed on screen.

A completion is correct when the scorer (eval.scorer; by default the strict `accuracy` reward, and for the shapes
tasks `label` or `iou`) gives it at least the scorer's `correct_at` (1.0; IoU: 0.5). `accuracy` is the fraction of
correct completions, which for a 0/1 scorer is pass@1 (the mean over items of c/n); a scorer with a graded score
also reports its mean under its own name (`mean_iou`). With eval.blank_control, every item is scored a second time
with its images replaced by blank ones (`<name>_blank.json`): the proof that an answer depends on the image.
pass@k uses the unbiased estimator of Chen et al. 2021, 1 - C(n-c, k)/C(n, k), averaged over items.
Majority vote (maj@n) takes, per item, the most frequent final answer (the last `\\boxed{}` content, spaces
removed; completions without one do not vote; ties go to the answer seen first) and counts the item correct
when a completion with that answer is correct. With two or more groups (Example.group: data.group_column, or the
reasoning-gym task) every group gets the same metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gpgrl.config import Config, ConfigError, DataConfig
from gpgrl.data import Example, load_splits, scored_text
from gpgrl.rewards import RewardSet, TrainerState, accuracy, boxed_format, last_boxed, load_reward_function, trl_inputs
from gpgrl.rollout import PromptEncoder, SamplingParams, generate, make_encoder

CORRECT_AT = 1.0
"""A completion is correct when its score is at least this."""


# ---------------------------------------------------------------- metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one item with `c` correct among `n` samples: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    >>> pass_at_k(5, 2, 2), pass_at_k(5, 0, 3), pass_at_k(5, 4, 2), pass_at_k(4, 1, 1)
    (0.7, 0.0, 1.0, 0.25)
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def answer_key(completion: str) -> str | None:
    r"""The final answer a completion votes for: its last `\boxed{}` content without spaces; None if unboxed.

    >>> answer_key(r"so \boxed{ 1/2 }"), answer_key("no box")
    ('1/2', None)
    """
    boxed = last_boxed(completion)
    return None if boxed is None else "".join(boxed.split())


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether the most frequent answer (None does not vote; ties: first seen) has a correct completion.

    >>> majority_vote(["7", "8", "8", None], [True, False, False, False])
    False
    >>> majority_vote(["7", "8", "7", "8"], [True, False, True, False])
    True
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return False
    winner = max(counts, key=lambda a: (counts[a], -answers.index(a)))
    return any(ok for a, ok in zip(answers, correct, strict=True) if a == winner)


# ---------------------------------------------------------------- the result


@dataclass(frozen=True)
class EvalResult:
    """Evaluation of `n` items with `num_samples` completions each; `records` has one dict per completion."""

    accuracy: float
    n: int
    boxed_rate: float
    records: list[dict[str, Any]]
    num_samples: int = 1
    pass_at: dict[int, float] = field(default_factory=dict)
    majority: float | None = None
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)
    reward_invalid: dict[str, int] = field(default_factory=dict)
    truncated_rate: float = 0.0
    wall_time_s: float = 0.0
    means: dict[str, float] = field(default_factory=dict)
    """The scorer's mean score under its own name (boxes: mean_iou), when it is not a 0/1 verdict."""
    items: str = ""
    """Which rows were scored (`gpgrl eval` says, e.g. 'all 250 rows of data.path=...')."""

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"accuracy": self.accuracy, **self.means, "n": self.n,
                               "num_samples": self.num_samples, "completions": len(self.records),
                               "boxed_rate": self.boxed_rate, "truncated_rate": self.truncated_rate}
        out.update({f"pass@{k}": v for k, v in self.pass_at.items()})
        if self.majority is not None:
            out[f"maj@{self.num_samples}"] = self.majority
        if self.rewards:
            out["rewards"] = self.rewards
            out["reward_invalid"] = self.reward_invalid
        if self.groups:
            out["groups"] = self.groups
        if self.items:
            out["items"] = self.items
        out["wall_time_s"] = round(self.wall_time_s, 3)
        return out


def _item_metrics(records: Sequence[dict[str, Any]], num_samples: int, ks: Sequence[int],
                  mean_name: str | None = None) -> dict[str, Any]:
    """accuracy (the fraction of correct completions), the mean score as `mean_name` (when given), n, pass@k and
    maj@n over the items whose completions are `records` (grouped by item index)."""
    items: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        items.setdefault(r["index"], []).append(r)
    n = len(items)
    correct = [[r["correct"] for r in rows] for rows in items.values()]
    out: dict[str, Any] = {"accuracy": sum(r["correct"] for r in records) / max(len(records), 1), "n": n}
    if mean_name:
        out[mean_name] = sum(r["score"] for r in records) / max(len(records), 1)
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(num_samples, sum(c), k) for c in correct) / max(n, 1)
    if num_samples > 1:
        votes = [majority_vote([r["answer_key"] for r in rows], [r["correct"] for r in rows])
                 for rows in items.values()]
        out[f"maj@{num_samples}"] = sum(votes) / max(n, 1)
    return out


def _group_metrics(records: Sequence[dict[str, Any]], num_samples: int, ks: Sequence[int],
                   mean_name: str | None) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    if len(groups) < 2:
        return {}  # one group is the overall result
    return {g: _item_metrics(rows, num_samples, ks, mean_name) for g, rows in sorted(groups.items())}


def _result(records: list[dict[str, Any]], num_samples: int, ks: Sequence[int], wall_time_s: float,
            invalid: dict[str, int], mean_name: str | None) -> EvalResult:
    m = _item_metrics(records, num_samples, ks, mean_name)
    labels = list(records[0]["rewards"]) if records else []
    return EvalResult(
        accuracy=m["accuracy"], n=m["n"], boxed_rate=sum(r["boxed"] for r in records) / len(records),
        records=records, num_samples=num_samples, pass_at={k: m[f"pass@{k}"] for k in ks},
        majority=m.get(f"maj@{num_samples}"), groups=_group_metrics(records, num_samples, ks, mean_name),
        rewards={name: sum(r["rewards"][name] for r in records) / len(records) for name in labels},
        reward_invalid=invalid, truncated_rate=sum(r["truncated"] for r in records) / len(records),
        wall_time_s=wall_time_s, means={mean_name: m[mean_name]} if mean_name else {})


# ---------------------------------------------------------------- evaluation


def _columns(examples: Sequence[Example]) -> dict[str, list[Any]]:
    columns = {"answer": [ex.answer for ex in examples]}
    for key in examples[0].columns if examples else ():
        columns[key] = [ex.columns[key] for ex in examples]
    return columns


def _score(scorer: Callable[..., list[float | None]], flat: list[tuple[Example, Any]], texts: list[str],
           state: TrainerState) -> list[float]:
    examples = [ex for ex, _ in flat]
    prompts, completions = trl_inputs(examples, texts)
    ids = [s.completion_ids.tolist() for _, s in flat]
    scores = scorer(prompts=prompts, completions=completions, completion_ids=ids, **_columns(examples),
                    trainer_state=state)
    return [0.0 if s is None or not math.isfinite(float(s)) else float(s) for s in scores]


def evaluate(model, encoder: PromptEncoder, examples: Sequence[Example], params: SamplingParams,
             scorer: Callable[..., list[float | None]] = accuracy, *, num_samples: int = 1,
             ks: Sequence[int] = (1,), rewards: RewardSet | None = None,
             state: TrainerState | None = None) -> EvalResult:
    """Generate `num_samples` completions per example (prompts encoded by `encoder`) and score them.

    `scorer` decides correctness (None counts as 0; correct = score >= its `correct_at`, default 1.0; its
    `mean_name`, when it has one, names the mean score in the summary); `rewards`, when given, scores every
    completion with the run's reward functions too (logged per completion and averaged). pass@k is reported for
    each k in `ks` (each must be <= num_samples). Greedy decoding (temperature 0) allows one sample only.
    """
    if not examples:
        return EvalResult(0.0, 0, 0.0, [], num_samples=num_samples)
    bad = [k for k in ks if not 1 <= k <= num_samples]
    if bad or num_samples < 1:
        raise ValueError(f"pass@k needs 1 <= k <= num_samples={num_samples}, got k={bad}")
    start = time.perf_counter()
    correct_at = float(getattr(scorer, "correct_at", CORRECT_AT))
    groups = generate(model, encoder, [encoder.encode(ex) for ex in examples], num_samples, params)
    flat = [(ex, s) for ex, group in zip(examples, groups, strict=True) for s in group]
    state = state or TrainerState()
    texts = [scored_text(encoder.response_prefix, s.text) for _, s in flat]  # what is scored
    scores = _score(scorer, flat, texts, state)
    boxed = boxed_format([ex.question for ex, _ in flat], texts, answer=[ex.answer for ex, _ in flat])
    prompts, completions = trl_inputs([ex for ex, _ in flat], texts)
    out = None if rewards is None else rewards(
        prompts, completions, _columns([ex for ex, _ in flat]), completion_lengths=[s.length for _, s in flat],
        completion_ids=[s.completion_ids.tolist() for _, s in flat], trainer_state=state)
    records = [{"index": ex.index, "sample": i % num_samples, "group": ex.group, "question": ex.question,
                "answer": ex.answer, "completion": texts[i], "score": score, "correct": score >= correct_at,
                "answer_key": answer_key(texts[i]), "boxed": boxed[i], "truncated": s.truncated, "length": s.length,
                "reward": out.total[i] if out else None,
                "rewards": {k: v[i] for k, v in out.per_function.items()} if out else {}}
               for i, ((ex, s), score) in enumerate(zip(flat, scores, strict=True))]
    return _result(records, num_samples, ks, time.perf_counter() - start, dict(out.invalid) if out else {},
                   getattr(scorer, "mean_name", None))


def write_eval(result: EvalResult, path: Path) -> None:
    """`path` gets the summary; a sibling `<stem>_completions.jsonl` gets every completion."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.summary(), indent=2) + "\n")
    with path.with_name(path.stem + "_completions.jsonl").open("w", encoding="utf-8") as fh:
        for record in result.records:
            fh.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- on screen


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_tables(result: EvalResult, title: str = "evaluation") -> list[Table]:
    """The summary as rich tables: the overall metrics, then one row per group (if any)."""
    summary = result.summary()
    overall = Table(title=title)
    overall.add_column("metric")
    overall.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, dict):
            continue
        overall.add_row(key, _fmt(value))
    for name, value in result.rewards.items():
        overall.add_row(f"reward/{name}", _fmt(value))
    tables = [overall]
    if result.groups:
        columns = list(next(iter(result.groups.values())))
        by_group = Table(title="by group")
        for col in ("group", *columns):
            by_group.add_column(col, justify="left" if col == "group" else "right")
        for group, metrics in result.groups.items():
            by_group.add_row(group, *(_fmt(metrics[c]) for c in columns))
        tables.append(by_group)
    return tables


# ---------------------------------------------------------------- `gpgrl eval`


def sampling_params(cfg: Config) -> SamplingParams:
    """Decoding settings of an evaluation (eval.temperature 0 = greedy), with the sampler training uses
    (rollout.shared_prefill: gpgrl's KV-cached loop, or HF `generate`)."""
    e = cfg.eval
    return SamplingParams(e.max_new_tokens, e.temperature, e.top_p, e.batch_size,
                          shared_prefill=cfg.rollout.shared_prefill)


def output_path(cfg: Config) -> Path:
    """eval.output, or <train.output_dir>/eval.json when it is empty."""
    return Path(cfg.eval.output) if cfg.eval.output else Path(cfg.train.output_dir) / "eval.json"


def default_scorer(data: DataConfig) -> tuple[str, dict[str, Any]]:
    """The scorer eval.scorer='' stands for, with its parameters: for the shapes tasks iou (grounding) or label
    reading free-form answers against the task's labels (mention=true), else accuracy."""
    if data.resolved_source() == "shapes":
        return ("iou", {}) if data.task == "grounding" else ("label", {"mention": True})
    return "accuracy", {}


def load_scorer(cfg: Config) -> Callable[..., list[float | None]]:
    """eval.scorer (with reward.kwargs.<name> as its parameters), or the data's default scorer."""
    if not cfg.eval.scorer:
        return load_reward_function(*default_scorer(cfg.data))
    return load_reward_function(cfg.eval.scorer, cfg.reward.kwargs.get(cfg.eval.scorer))


def blank_controls(examples: Sequence[Example]) -> list[Example]:
    """The examples with every image replaced by a white image of the same size."""
    return [dataclasses.replace(ex, images=tuple(image.blank() for image in ex.images)) for ex in examples]


def blank_path(path: Path) -> Path:
    """Where the blank-image control of the evaluation written to `path` goes: `<stem>_blank.json`."""
    return path.with_name(f"{path.stem}_blank.json")


def evaluate_and_write(model, encoder: PromptEncoder, examples: Sequence[Example], cfg: Config,
                       rewards: RewardSet | None, path: Path, state: TrainerState | None = None,
                       items: str = "") -> tuple[EvalResult, EvalResult | None]:
    """The evaluation of `cfg.eval` written to `path`, and with eval.blank_control its blank-image control; `items`
    says in the summary which rows were scored."""
    e = cfg.eval
    scorer = load_scorer(cfg)
    if e.blank_control and not any(ex.images for ex in examples):
        raise ConfigError("eval.blank_control=true replaces the items' images, but these items have none: remove "
                          "it or evaluate image data")
    result = evaluate(model, encoder, examples, sampling_params(cfg), scorer, num_samples=e.num_samples, ks=e.k,
                      rewards=rewards, state=state)
    result = dataclasses.replace(result, items=items)
    write_eval(result, path)
    if not e.blank_control:
        return result, None
    control = evaluate(model, encoder, blank_controls(examples), sampling_params(cfg), scorer,
                       num_samples=e.num_samples, ks=e.k, rewards=rewards, state=state)
    control = dataclasses.replace(control, items=f"{items}, images blank" if items else "images blank")
    write_eval(control, blank_path(path))
    return result, control


def eval_items(cfg: Config) -> tuple[list[Example], str]:
    """The items `gpgrl eval` scores and where they come from: the eval split of data.*; for a data file or a local
    dataset directory without data.eval_split, every row of data.split (someone evaluating a file means all of it)."""
    data = cfg.data
    whole = not data.eval_split and data.resolved_source() in ("file", "hf") and Path(data.path).exists()
    if whole:
        data = dataclasses.replace(data, eval_split="1.0", split=data.split or "train")
    _, examples = load_splits(data)
    if not examples:
        raise ConfigError("the eval split is empty: set data.eval_size (reasoning-gym), or data.eval_split (a "
                          "split name such as test, or a fraction such as 0.1 of data.split; 1.0 = all of it)")
    if whole:
        return examples, f"all {len(examples)} rows of data.path={data.path!r} (split {data.split!r})"
    if data.resolved_source() in ("reasoning_gym", "shapes"):
        return examples, f"the {len(examples)} held-out items of {data.resolved_source()} task {data.task!r}"
    return examples, f"the {len(examples)} rows of data.eval_split={data.eval_split!r} of {data.path or data.source}"


def _eval_model(cfg: Config, inputs: Any) -> tuple[Any, Any]:
    from gpgrl.models import load_policy, prepare_loaded  # heavy: only once the config and the data are good

    if inputs is not None and inputs.model is not None:
        return prepare_loaded(cfg.model, cfg.train.seed, inputs.model, inputs.processing)
    return load_policy(cfg.model, cfg.train.seed)


def run_evaluation(cfg: Config, console: Console, inputs: Any = None,
                   examples: Sequence[Example] | None = None) -> EvalResult:
    """`gpgrl eval` and `gpgrl.evaluate`: the model of `cfg.model` (or `inputs.model`) on `eval_items(cfg)` (or the
    given examples); writes eval.output (+ JSONL, + the blank-image control) and prints the tables."""
    import torch

    items = "the given eval_dataset" if examples is not None else ""
    if examples is None:
        examples, items = eval_items(cfg)
    rewards = inputs.rewards if inputs is not None and inputs.rewards is not None else RewardSet.from_config(cfg.reward)
    load_scorer(cfg)  # a bad eval.scorer fails before the model loads
    model, tokenizer = _eval_model(cfg, inputs)
    encoder = make_encoder(tokenizer, model, cfg.data.system_prompt, cfg.data.prompt_template,
                           cfg.data.response_prefix)
    if torch.cuda.is_available():
        model = model.to("cuda")
    torch.manual_seed(cfg.train.seed)
    e = cfg.eval
    console.print(f"evaluating {cfg.model.name} on {items} x {e.num_samples} samples (temperature "
                  f"{e.temperature}, top_p {e.top_p}, {e.max_new_tokens} new tokens)")
    path = output_path(cfg)
    result, control = evaluate_and_write(model, encoder, list(examples), cfg, rewards, path, items=items)
    for table in summary_tables(result, title=f"{cfg.model.name}: eval"):
        console.print(table)
    if control is not None:
        console.print(f"blank-image control: accuracy {control.accuracy:.3f} (with the images: "
                      f"{result.accuracy:.3f}); wrote {blank_path(path)}")
    console.print(f"wrote {path} and {path.with_name(path.stem + '_completions.jsonl')}")
    return result

