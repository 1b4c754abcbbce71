"""The Python API (gpgrl.load_config / train / evaluate) on the tiny model: rewards as callables called the way TRL
calls them, datasets as lists or `datasets.Dataset`, loaded model objects, callbacks, and the CLI's errors."""

import asyncio
import json

import datasets
import pytest
import torch

import gpgrl
from gpgrl.cli import main
from gpgrl.models import load_policy


def config(tmp_path, *extra: str):
    return gpgrl.load_config(overrides=[
        "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"train.output_dir={tmp_path / 'run'}",
        "rollout.prompts_per_step=2", "rollout.generations_per_prompt=3", "rollout.max_new_tokens=6",
        "eval.max_new_tokens=6", "logging.progress=false", "logging.tensorboard=false", "train.max_steps=2",
        "optim.lr=1e-3", 'data.prompt_template="{question}"', "data.system_prompt=", *extra])


ROWS = [{"question": f"What is {a} + {b}?", "answer": str(a + b), "solution": str(a + b)}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (4, 5), (6, 1), (9, 9)]]


def digits(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


async def length(prompts, completions, **kwargs):
    await asyncio.sleep(0)
    return [len(c) / 10 for c in completions]


def test_train_with_callables_lists_and_callbacks(tmp_path):
    seen = []
    held = datasets.Dataset.from_list(ROWS[6:])
    result = gpgrl.train(config(tmp_path), reward_funcs=[digits, length, "boxed_format"],
                         reward_weights=[1.0, 0.1, 0.5], train_dataset=ROWS[:6], eval_dataset=held,
                         callbacks=[seen.append])
    assert [m["step"] for m in seen] == [1, 2] and all("reward/digits" in m and "alpha" in m for m in seen)
    assert result.summary["steps"] == 2 and result.summary["eval_n"] == 2
    assert result.output_dir == tmp_path / "run" and (result.output_dir / "final" / "config.json").is_file()
    assert isinstance(result.model, torch.nn.Module) and result.tokenizer.pad_token is not None
    written = (tmp_path / "run" / "config.yaml").read_text()
    assert f"{digits.__module__}:digits" in written and "boxed_format" in written  # the run's rewards, by name
    evaluated = gpgrl.evaluate(config(tmp_path, f"eval.output={tmp_path / 'e.json'}"), model=result.model,
                               tokenizer=result.tokenizer, eval_dataset=ROWS[6:], reward_funcs=[digits])
    assert evaluated.n == 2 and json.loads((tmp_path / "e.json").read_text())["items"] == "the given eval_dataset"


def test_loaded_model_objects_and_a_dataset_path(tmp_path):
    model, tokenizer = load_policy(gpgrl.load_config(overrides=["model.name=tiny-random",
                                                                f"model.cache_dir={tmp_path / 'cache'}"]).model, 0)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = config(tmp_path, "data.source=given", "data.eval_split=0.25", "eval.before=false")
    result = gpgrl.train(cfg, model=model, tokenizer=tokenizer, train_dataset=path, reward_funcs=[digits])
    assert result.model is model  # trained in place
    assert result.summary["eval_n"] == 2  # a fractional data.eval_split holds out part of a given train_dataset


def test_a_given_source_needs_given_datasets_and_keeps_its_column_keys(tmp_path):
    with pytest.raises(gpgrl.ConfigError, match="data.prompt_column='prompt' has no effect here .*data.source=given"):
        config(tmp_path, "data.prompt_column=prompt")
    rows = [{"prompt": r["question"], "solution": r["solution"]} for r in ROWS]
    cfg = config(tmp_path, "data.source=given", "data.prompt_column=prompt", "data.answer_column=solution",
                 "eval.before=false", "eval.after=false")
    assert gpgrl.train(cfg, train_dataset=rows, reward_funcs=[digits]).summary["steps"] == 2
    with pytest.raises(gpgrl.ConfigError, match="data.source=given takes its prompts from the datasets given"):
        gpgrl.train(config(tmp_path / "b", "data.source=given"), reward_funcs=[digits])


def test_errors_are_config_errors_with_the_clis_messages(tmp_path, capsys):
    with pytest.raises(gpgrl.ConfigError, match="did you mean 'max_steps'"):
        gpgrl.load_config(overrides=["train.max_step=3"])
    assert main(["config", "train.max_step=3"]) == 2
    assert "did you mean 'max_steps'" in capsys.readouterr().out
    cfg = config(tmp_path)
    with pytest.raises(gpgrl.ConfigError, match="reward_weights has 2 entries but reward_funcs has 1"):
        gpgrl.train(cfg, reward_funcs=[digits], reward_weights=[1.0, 2.0])
    with pytest.raises(gpgrl.ConfigError, match="give model and tokenizer"):
        gpgrl.train(cfg, model=torch.nn.Linear(1, 1))
    with pytest.raises(gpgrl.ConfigError, match="train_dataset row 1"):
        gpgrl.train(cfg, train_dataset=[{"prompt": "no question column"}], reward_funcs=[digits])
    with pytest.raises(gpgrl.ConfigError, match="train_dataset must be a path, a datasets.Dataset or a list"):
        gpgrl.train(cfg, train_dataset=42, reward_funcs=[digits])


def test_gpgrl_eval_on_a_file_scores_every_row_and_says_so(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5]))
    out = tmp_path / "eval.json"
    assert main(["eval", "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"data.path={path}",
                 "eval.max_new_tokens=4", f"eval.output={out}"]) == 0
    summary = json.loads(out.read_text())
    assert summary["n"] == 5 and summary["items"] == f"all 5 rows of data.path='{path}' (split 'train')"
