r"""Rewards: the built-in reward functions, loading rewards by name, and the weighted reward set.

Owns the built-in rewards (registered by name in `REWARDS`): for text answers `accuracy`, `cosine`,
`boxed_format`, `think_format`, `soft_overlong`, `repetition_penalty`, `task_score` (`text`); for visual tasks
`label`, `choice`, `iou`, `giou` (`visual`), all reading the answer through one extraction (`answers`); loading a
reward by name with its keyword arguments (`load_reward_function`); and `RewardSet`, which runs several rewards in
parallel under a time limit, applies the error and invalid-value policies and forms the weighted total.

Contract (TRL's): `f(prompts, completions, **columns) -> list[float | None]`, sync or `async def`, called with
every argument by keyword. `prompts` are the dataset's prompts and `completions` the generated texts; for
conversational data, as TRL does, the prompts' message lists and `[{"role": "assistant", "content": text}]` per
completion (the built-ins accept both forms); `completion_ids` the generated token ids, `trainer_state` a
`TrainerState` (global_step, max_steps, epoch), and every column is a list aligned
with `completions`: `answer`, the dataset's other columns (for reasoning-gym data `entry` and `task`), and
`completion_lengths` (tokens per completion) when the caller passes them. A function must accept unknown
columns through `**kwargs`; `None` means "no verdict" for that completion.

Parameterised built-ins are frozen dataclasses whose fields are their parameters (`Cosine(max_len=2000)`,
set from the config as `reward.kwargs.cosine.max_len=2000`); each instance is a reward function.
"""

from gpgrl.rewards.registry import REWARDS
from gpgrl.rewards.reward_set import (
    RewardError,
    RewardOutput,
    RewardSet,
    TrainerState,
    load_reward_function,
    trl_inputs,
)
from gpgrl.rewards.text import (
    Accuracy,
    Cosine,
    RepetitionPenalty,
    SoftOverlong,
    accuracy,
    boxed_format,
    cosine,
    last_boxed,
    repetition_penalty,
    task_score,
    think_format,
)
from gpgrl.rewards.visual import Label, box_giou, box_iou, choice, giou, iou, label, parse_box

__all__ = ["REWARDS", "Accuracy", "Cosine", "RepetitionPenalty", "RewardError", "RewardOutput", "RewardSet",
           "SoftOverlong", "accuracy", "boxed_format", "cosine", "last_boxed", "load_reward_function",
           "repetition_penalty", "task_score", "think_format", "Label", "box_giou", "box_iou", "choice", "giou", "iou",
           "label", "parse_box", "TrainerState", "trl_inputs"]
