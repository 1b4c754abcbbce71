"""Config: YAML + overrides, type coercion, validation messages that name the key to change."""

import dataclasses

import pytest

from gpgrl.config import Config, ConfigError, build_config, load_config, parse_override, to_dict, to_yaml


def test_defaults_are_valid_and_frozen():
    cfg = build_config()
    assert cfg == Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.max_steps = 3  # type: ignore[misc]


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  max_steps: 7\n  seed: 3\nrollout:\n  generations_per_prompt: 4\n")
    cfg = load_config(path, ["train.max_steps=9", "optim.lr=1e-5", "model.name=tiny-random"])
    assert cfg.train.max_steps == 9  # override beats the file
    assert cfg.train.seed == 3  # file beats the default
    assert cfg.rollout.generations_per_prompt == 4
    assert cfg.optim.lr == 1e-5  # YAML 1.1 reads "1e-5" as a string; coerced to float
    assert cfg.model.name == "tiny-random"


def test_coercion_of_bools_tuples_and_none():
    cfg = build_config(overrides=["eval.before=false", "reward.functions=accuracy,boxed_format",
                                  "reward.weights=[1, 0.5]", "algorithm.beta_th=0.8", "algorithm.beta_th=null"])
    assert cfg.eval.before is False
    assert cfg.reward.functions == ("accuracy", "boxed_format")
    assert cfg.reward.weights == (1.0, 0.5)
    assert cfg.algorithm.beta_th is None  # the later override wins


def test_nested_dict_override_merges_into_default():
    cfg = build_config(overrides=["data.task_kwargs.max_digits=3"])
    assert cfg.data.task_kwargs["max_digits"] == 3  # changed
    assert cfg.data.task_kwargs["operators"] == ["+"]  # kept from the default mapping


@pytest.mark.parametrize("override, fragment", [
    ("train.max_step=3", "did you mean 'max_steps'"),
    ("trian.max_steps=3", "did you mean 'train'"),
    ("train.max_steps=abc", "train.max_steps must be an integer"),
    ("train.max_steps=2.5", "train.max_steps must be an integer"),
    ("rollout.generations_per_prompt=1", "at least 2 completions"),
    ("model.dtype=float16", "model.dtype='float16' is not one of"),
    ("reward.weights=[1]", "give one weight per function"),
    ("algorithm.name=gpgg", "gpg"),
    ("algorithm.f_norm=group_std", "f_norm"),
    ("eval.before=maybe", "eval.before must be true or false"),
    ("max_steps", "must look like section.key=value"),
    ("train=3", "names a whole section"),
])
def test_errors_name_the_key(override, fragment):
    overrides = [override]
    if "f_norm" in override:
        overrides = ["algorithm.name=grpo", override]  # grpo's estimator takes no f_norm
    with pytest.raises(ConfigError, match=None) as err:
        build_config(overrides=overrides)
    assert fragment in str(err.value)


def test_world_size_must_divide_prompts():
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        build_config(overrides=["rollout.prompts_per_step=8"], world_size=3)
    assert build_config(overrides=["rollout.prompts_per_step=6"], world_size=3).rollout.prompts_per_step == 6


def test_unknown_optimizer_names_the_choices():
    with pytest.raises(ConfigError, match=r"optim\.optimizer='adam' is not one of 'adamw', 'sgd'"):
        build_config(overrides=["optim.optimizer=adam"])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("optim:\n  learning_rate: 1.0e-5\n")
    with pytest.raises(ConfigError, match=r"unknown config key optim\.'learning_rate'"):
        load_config(path)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_yaml_round_trip(tmp_path):
    cfg = build_config(overrides=["algorithm.name=dapo", "data.task_kwargs.max_digits=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg
    assert to_dict(cfg)["reward"]["functions"] == ["accuracy", "boxed_format"]


def test_parse_override_values():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=") == ("a.b", "")
    assert parse_override("a.b=x=y") == ("a.b", "x=y")


def test_algorithm_overrides_only_lists_set_fields():
    cfg = build_config(overrides=["algorithm.beta_th=0.8", "algorithm.alpha=tokens"])
    assert cfg.algorithm.overrides() == {"beta_th": 0.8, "alpha": "tokens"}


def test_default_recipe_file_is_the_default_config():
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "default.yaml"
    assert load_config(recipe) == Config(), "recipes/default.yaml must mirror the built-in defaults"


def test_micro_group_overrides_reach_the_preset_and_must_tile_the_step():
    cfg = build_config(overrides=["algorithm.name=gpg", "algorithm.micro_groups=2", "algorithm.alpha_groups=4",
                                  "rollout.prompts_per_step=8"])
    assert cfg.algorithm.overrides() == {"micro_groups": 2, "alpha_groups": 4}
    with pytest.raises(ConfigError, match="prompts_per_step=6 is not a multiple of the preset's α window of 4"):
        build_config(overrides=["algorithm.micro_groups=2", "algorithm.alpha_groups=4", "rollout.prompts_per_step=6"])
    with pytest.raises(ConfigError, match="alpha_groups=3 must be a multiple of micro_groups=2"):
        build_config(overrides=["algorithm.micro_groups=2", "algorithm.alpha_groups=3"])
    with pytest.raises(ConfigError, match="window of 2 groups"):  # the preset's own window
        build_config(overrides=["algorithm.name=gpg-ref-microbatch", "rollout.prompts_per_step=3"])


def test_none_is_a_value_of_string_overrides_and_unsets_numbers():
    cfg = build_config(overrides=["algorithm.name=gpg", "algorithm.alpha=none", "algorithm.f_norm=none",
                                  "algorithm.beta_th=none"])
    assert cfg.algorithm.overrides() == {"alpha": "none", "f_norm": "none"}  # α = 1, not the preset's samples
    assert build_config(overrides=["algorithm.alpha=null"]).algorithm.overrides() == {}


def test_powered_comparison_recipe_meets_the_issue_15_design():
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "compare" / "powered_arithmetic.yaml"
    cfg = load_config(recipe)
    assert cfg.reward.functions == ("accuracy",) and cfg.reward.weights == (1.0,)  # the accuracy reward alone
    assert cfg.train.max_steps >= 30 and cfg.data.eval_size >= 300
    assert "{question}" in cfg.data.prompt_template and "boxed" not in cfg.data.prompt_template
