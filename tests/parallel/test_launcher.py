"""The accelerate config's engine choice maps onto parallel.strategy, or fails naming the fix."""

import pytest

from gpgrl.config import ConfigError, load_config
from gpgrl.parallel import STRATEGIES, launcher_strategy, resolve_strategy, strip_launcher_env


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "fsdp2"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, "zero2"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "zero3"),
    ({"ACCELERATE_USE_FSDP": "false"}, None),
])
def test_launcher_choices_map_onto_strategies(env, expected):
    assert launcher_strategy(env) == expected


@pytest.mark.parametrize(("env", "fix"), [
    ({"ACCELERATE_USE_FSDP": "true"}, "fsdp_version: 2"),  # accelerate's default FSDP version is 1
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "fsdp_version: 2"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}, "zero_stage: 2 or 3"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": "ds.json"}, "remove deepspeed_config"),
    ({"ACCELERATE_USE_MEGATRON_LM": "true"}, "MULTI_GPU"),
])
def test_unsupported_launcher_choices_name_the_fix(env, fix):
    with pytest.raises(ConfigError, match=fix):
        launcher_strategy(env)


def test_the_config_and_the_launcher_must_agree():
    fsdp = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
    assert resolve_strategy("ddp", fsdp) == "fsdp2"  # the default yields to the launcher's explicit choice
    assert resolve_strategy("fsdp2", fsdp) == "fsdp2"
    assert resolve_strategy("zero3", {}) == "zero3"
    with pytest.raises(ConfigError, match="parallel.strategy=zero3 but the accelerate config selects fsdp2"):
        resolve_strategy("zero3", fsdp)


def test_strip_launcher_env_removes_the_engine_switches():
    env = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "ACCELERATE_USE_DEEPSPEED": "true",
           "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "WORLD_SIZE": "2"}
    strip_launcher_env(env)
    assert env == {"WORLD_SIZE": "2"}


def test_parallel_config_keys_are_validated():
    assert set(STRATEGIES) == {"ddp", "fsdp2", "zero2", "zero3"}
    assert load_config(None, ["parallel.strategy=fsdp2", "parallel.mixed_precision=bf16",
                              "parallel.cpu_offload=true"]).parallel.mixed_precision == "bf16"
    with pytest.raises(ConfigError, match="parallel.strategy='fsdp3' is not one of"):
        load_config(None, ["parallel.strategy=fsdp3"])
    with pytest.raises(ConfigError, match="apply to parallel.strategy=fsdp2, not 'zero3'"):
        load_config(None, ["parallel.strategy=zero3", "parallel.cpu_offload=true"])
    with pytest.raises(ConfigError, match="parallel.mixed_precision='fp16' is not one of"):
        load_config(None, ["parallel.strategy=fsdp2", "parallel.mixed_precision=fp16"])


def test_a_given_model_object_refuses_a_sharded_strategy(tmp_path):
    from gpgrl.trainer import RunInputs, choose_strategy

    cfg = load_config(None, ["parallel.strategy=fsdp2", f"train.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="trains with parallel.strategy=ddp"):
        choose_strategy(cfg, RunInputs(model=object()))
    assert choose_strategy(cfg, RunInputs()).parallel.strategy == "fsdp2"
