"""Reward functions written for TRL run unchanged: every argument by keyword, the dataset's columns under their
own names, `completion_ids` and `trainer_state`, and for conversational data prompts and completions as messages."""

import json
import textwrap

from gpgrl.cli import main
from gpgrl.rewards import RewardSet, accuracy, boxed_format, label

OPEN_R1_STYLE = textwrap.dedent('''
    import json, os

    def accuracy_reward(completions, solution, **kwargs):
        """As open-r1 writes it: conversational completions, the gold in a `solution` column."""
        contents = [completion[0]["content"] for completion in completions]
        with open(os.environ["GPGRL_TEST_LOG"], "a") as log:
            log.write(json.dumps({
                "prompt": kwargs["prompts"][0], "completion": completions[0], "solution": solution[0],
                "ids": kwargs["completion_ids"][0], "step": kwargs["trainer_state"].global_step,
                "max_steps": kwargs["trainer_state"].max_steps, "level": kwargs["level"][0]}) + "\\n")
        return [float(sol in content) for content, sol in zip(contents, solution)]

    def reward_len(completions, **kwargs):
        """TRL's documentation example, for standard (string) data."""
        return [-abs(20 - len(completion)) / 20 for completion in completions]
''')


def test_an_open_r1_reward_on_conversational_data_trains(tmp_path, monkeypatch):
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(OPEN_R1_STYLE)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
                                        "solution": str(2 * i), "level": i % 3}) + "\n" for i in range(12)))
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("GPGRL_TEST_LOG", str(log))
    assert main(["train", "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}",
                 f"train.output_dir={tmp_path / 'run'}", f"data.path={data}", "data.prompt_column=prompt",
                 "data.answer_column=solution", "rollout.prompts_per_step=2", "rollout.generations_per_prompt=2",
                 "rollout.max_new_tokens=4", "train.max_steps=2", "eval.before=false", "eval.after=false",
                 "logging.progress=false", f"reward.functions=[{rewards}:accuracy_reward,{rewards}:reward_len]",
                 "reward.weights=[1.0,0.1]", "algorithm.beta_th=0"]) == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["step"] for c in calls] == [0, 1] and {c["max_steps"] for c in calls} == {2}
    first = calls[0]
    assert first["prompt"] == [{"role": "user", "content": first["prompt"][0]["content"]}]
    assert first["completion"][0]["role"] == "assistant" and isinstance(first["completion"][0]["content"], str)
    assert first["solution"].isdigit() and isinstance(first["level"], int)
    assert isinstance(first["ids"], list) and all(isinstance(i, int) for i in first["ids"])


def test_a_reward_set_calls_by_keyword_and_the_builtins_read_both_forms():
    def trl_style(completions, solution, **kwargs):  # positionally, `solution` would receive the completions
        return [float(c[0]["content"] == s) for c, s in zip(completions, solution, strict=True)]

    reward_set = RewardSet([trl_style, "accuracy"], [1.0, 1.0])
    out = reward_set([[{"role": "user", "content": "q"}]] * 2,
                     [[{"role": "assistant", "content": r"\boxed{4}"}], [{"role": "assistant", "content": "5"}]],
                     {"answer": ["4", "4"], "solution": [r"\boxed{4}", "4"]}, completion_ids=[[1, 2], [3]])
    assert out.per_function == {"trl_style": [1.0, 0.0], "accuracy": [1.0, 0.0]}
    conversational = [[{"role": "assistant", "content": r"<answer>\boxed{7}</answer>"}]]
    assert accuracy(prompts=["q"], completions=conversational, answer=["7"]) == [1.0]
    assert boxed_format(prompts=["q"], completions=conversational) == [1.0]
    assert label(prompts=["q"], completions=[[{"role": "assistant", "content": "Cat."}]], answer=["cat"]) == [1.0]
