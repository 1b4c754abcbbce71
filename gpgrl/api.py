"""The Python API: training and evaluation from notebooks and scripts, the same calls the CLI makes.

    import gpgrl
    cfg = gpgrl.load_config("recipes/default.yaml", overrides=["train.max_steps=10"])   # path optional
    result = gpgrl.train(cfg, reward_funcs=[my_fn], train_dataset=rows, eval_dataset=held, callbacks=[on_step])
    result.summary, result.model, result.tokenizer, result.output_dir
    gpgrl.evaluate(cfg, model=result.model, tokenizer=result.tokenizer, eval_dataset=held)

Every keyword is optional; what is not given comes from the config, exactly as `gpgrl train` / `gpgrl eval` would
take it. `reward_funcs` are built-in names, "module:function" / "file.py:function" strings or Python callables
(sync or async) called as TRL calls them; datasets are a path, a `datasets.Dataset` or a list of dicts whose
columns data.* names; `model` and `tokenizer` (or a vision-language model's processor) may be loaded objects.
A callback gets each step's metrics dict. Bad input raises `ConfigError` with the CLI's message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from gpgrl.config import Config, ConfigError, RewardConfig, load_config

RewardArg = str | Callable[..., Any]


def _reward_config(cfg: Config, funcs: Sequence[RewardArg], weights: Sequence[float] | None) -> RewardConfig:
    """reward.* for the given functions: the given weights, else the config's when they match in number, else 1.0
    each (the config's weights belong to its own functions)."""
    from gpgrl.rewards.reward_set import function_name

    names = tuple(function_name(f) for f in funcs)
    if weights is None:
        weights = cfg.reward.weights if len(cfg.reward.weights) == len(names) and \
            cfg.reward.functions != RewardConfig().functions else (1.0,) * len(names)
    if len(weights) != len(names):
        raise ConfigError(f"reward_weights has {len(weights)} entries but reward_funcs has {len(names)}: give one "
                          "weight per function")
    return dataclasses.replace(cfg.reward, functions=names, weights=tuple(float(w) for w in weights))


def _with_model_name(cfg: Config, model: Any) -> Config:
    """The config of a run on a given model object names that model (config.yaml, the model card)."""
    if model is None:
        return cfg
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = getattr(base, "name_or_path", "") or getattr(base.config, "_name_or_path", "") or type(base).__name__
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=str(name)))


def _inputs(cfg: Config, reward_funcs: Sequence[RewardArg] | None, reward_weights: Sequence[float] | None,
            train_dataset: Any, eval_dataset: Any, model: Any, tokenizer: Any,
            callbacks: Sequence[Callable[[dict[str, Any]], Any]]) -> tuple[Config, Any]:
    from gpgrl.data import given_splits
    from gpgrl.rewards import RewardSet
    from gpgrl.trainer import RunInputs

    if (model is None) != (tokenizer is None):
        raise ConfigError("give model and tokenizer (or processor) together, or neither (model.name then names them)")
    rewards = None
    if reward_funcs is not None:
        if not reward_funcs:
            raise ConfigError("reward_funcs is empty: give at least one reward function or name")
        cfg = dataclasses.replace(cfg, reward=_reward_config(cfg, reward_funcs, reward_weights))
        rewards = RewardSet(list(reward_funcs), cfg.reward.weights, cfg.reward.kwargs, cfg.reward.timeout_s,
                            cfg.reward.on_error)
    examples = None
    if train_dataset is not None:  # the training prompts are the given ones: say so in config.yaml
        cfg = _given_source(cfg)
    if train_dataset is not None or eval_dataset is not None:
        examples = given_splits(cfg.data, train_dataset, eval_dataset)
    return _with_model_name(cfg, model), RunInputs(rewards, examples, model, tokenizer, tuple(callbacks))


def _given_source(cfg: Config) -> Config:
    """The config with data.source=given (the datasets passed in Python), re-validated; the data.* keys that only
    another source reads must then be at their defaults."""
    if cfg.data.resolved_source() == "given":
        return cfg
    from gpgrl.config import build_config, to_dict

    tree = to_dict(cfg)
    tree["data"] = {k: v for k, v in tree["data"].items() if k in _GIVEN_KEYS}
    tree["data"]["source"] = "given"
    return build_config(tree)


_GIVEN_KEYS = ("seed", "system_prompt", "prompt_template", "response_prefix", "eval_split", "prompt_column",
               "answer_column", "answer_format", "group_column", "image_column")


def train(cfg: Config | None = None, *, reward_funcs: Sequence[RewardArg] | None = None,
          reward_weights: Sequence[float] | None = None, train_dataset: Any = None, eval_dataset: Any = None,
          callbacks: Sequence[Callable[[dict[str, Any]], Any]] = (), model: Any = None, tokenizer: Any = None,
          console: Console | None = None) -> Any:
    """Train as `gpgrl train` does with `cfg` (default: `load_config()`), using the given objects in place of what
    the config names. Returns a `TrainResult` (summary, model, tokenizer, output_dir)."""
    from gpgrl.trainer import train as run_training

    cfg, inputs = _inputs(cfg or load_config(), reward_funcs, reward_weights, train_dataset, eval_dataset, model,
                          tokenizer, callbacks)
    return run_training(cfg, console or Console(soft_wrap=True), inputs)


def evaluate(cfg: Config | None = None, *, model: Any = None, tokenizer: Any = None, eval_dataset: Any = None,
             reward_funcs: Sequence[RewardArg] | None = None, reward_weights: Sequence[float] | None = None,
             console: Console | None = None) -> Any:
    """Evaluate as `gpgrl eval` does with `cfg`: model.name's model (or the given one) on the eval split of data.*
    (or `eval_dataset`, every row; a data file without data.eval_split is also read whole). Writes eval.output and
    returns the `EvalResult`."""
    from gpgrl.evaluation import run_evaluation

    cfg, inputs = _inputs(cfg or load_config(), reward_funcs, reward_weights, None, None, model, tokenizer, ())
    examples = None
    if eval_dataset is not None:
        from gpgrl.data import dataset_examples

        examples = dataset_examples(eval_dataset, cfg.data, "eval_dataset")
    return run_evaluation(cfg, console or Console(soft_wrap=True), inputs, examples)
