"""What the launcher asked for: an accelerate config's FSDP / DeepSpeed choice mapped onto `parallel.strategy`.

`accelerate launch` passes its config to the processes through environment variables (ACCELERATE_USE_FSDP,
FSDP_VERSION, ACCELERATE_USE_DEEPSPEED, ACCELERATE_DEEPSPEED_ZERO_STAGE, ...). gpgrl reads them once, before
anything heavy is loaded, and then removes them from its own environment: it applies the sharding itself, and an
`Accelerator` that saw them would take the engine over (or, on CPU, silently fall back to no gradient sync).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from gpgrl.config import ConfigError

LAUNCHER_KEYS = ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
                 "ACCELERATE_DEEPSPEED_CONFIG_FILE")
_FIX = "set distributed_type: MULTI_GPU in the accelerate config and choose the sharding with parallel.strategy"


def _true(env: Mapping[str, str], key: str) -> bool:
    return env.get(key, "").lower() in ("1", "true", "yes")


def launcher_strategy(env: Mapping[str, str]) -> str | None:
    """The strategy an accelerate config selects (fsdp2, zero2, zero3), None when it selects none; a choice
    gpgrl cannot honour raises ConfigError naming the fix."""
    if _true(env, "ACCELERATE_USE_MEGATRON_LM"):
        raise ConfigError(f"the accelerate config selects Megatron-LM, which gpgrl does not drive: {_FIX}")
    if _true(env, "ACCELERATE_USE_FSDP"):
        version = env.get("FSDP_VERSION", "1")
        if version != "2":
            raise ConfigError(f"the accelerate config selects FSDP version {version}; gpgrl shards with FSDP2: set "
                              "fsdp_version: 2 in the accelerate config, or parallel.strategy=fsdp2 with "
                              "distributed_type: MULTI_GPU")
        return "fsdp2"
    if _true(env, "ACCELERATE_USE_DEEPSPEED"):
        if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
            raise ConfigError("the accelerate config names a DeepSpeed config file; gpgrl writes the DeepSpeed "
                              "config itself (one optimizer step per gpgrl step): remove deepspeed_config_file and "
                              "set zero_stage: 2 or 3, or use parallel.strategy=zero2|zero3 with MULTI_GPU")
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
        if stage not in ("2", "3"):
            raise ConfigError(f"the accelerate config selects DeepSpeed ZeRO stage {stage or '(unset)'}; gpgrl "
                              "supports stages 2 and 3: set zero_stage: 2 or 3 in the accelerate config")
        return f"zero{stage}"
    return None


def resolve_strategy(configured: str, env: Mapping[str, str]) -> str:
    """The strategy to run: the launcher's when the config keeps the default (ddp), the config's otherwise; the
    two disagreeing is an error."""
    launched = launcher_strategy(env)
    if launched is None or launched == configured:
        return configured
    if configured == "ddp":
        return launched
    raise ConfigError(f"parallel.strategy={configured} but the accelerate config selects {launched}: make them agree "
                      f"(parallel.strategy={launched}, or an accelerate config with distributed_type: MULTI_GPU)")


def strip_launcher_env(env: MutableMapping[str, str] | None = None) -> None:
    """Remove accelerate's engine switches from this process's environment (see the module docstring)."""
    env = os.environ if env is None else env
    for key in (*LAUNCHER_KEYS, "ACCELERATE_USE_MEGATRON_LM"):
        env.pop(key, None)
