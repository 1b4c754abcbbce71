"""Tests of gpgrl.data: reasoning-gym splits, prompt rendering and the resumable prompt queue."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from gpgrl.config import ConfigError, DataConfig
from gpgrl.data import Example, PromptQueue, load_splits, normalise_question, render_prompt, reward_columns

# fixed task kwargs (not the config defaults, which are tuned for the demo), so the pinned items below hold
SMALL = DataConfig(train_size=200, eval_size=50, seed=1234,
                   task_kwargs={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2})
# 11 * 11 = 121 possible questions ("Calculate a + b." with 0 <= a, b <= 10): forces eval de-duplication.
TINY_SPACE = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+"],
              "allow_parentheses": False, "allow_negation": False}

CHATML = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}"
             "{{ raise_exception('System role not supported') }}{% endif %}"
             "<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tiny_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    """A two-word WordLevel tokenizer built in-process (nothing downloaded)."""
    backend = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "<eos>": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="[UNK]",
                                   chat_template=chat_template)


def examples(n: int) -> list[Example]:
    return [Example(question=f"q{i}", answer=str(i), columns={"task": "t"}, index=i) for i in range(n)]


# ---------------------------------------------------------------- splits


def test_splits_have_the_configured_sizes_and_reasoning_gym_content():
    train, evals = load_splits(SMALL)
    assert (len(train), len(evals)) == (200, 50)
    assert [ex.index for ex in train] == list(range(200))
    assert [ex.index for ex in evals] == list(range(50))
    # reasoning-gym 0.1.25, basic_arithmetic, seed 1234, the kwargs of SMALL: item 0
    first = train[0]
    assert (first.question, first.answer) == ("Calculate -7 + -6.", "-13")
    assert first.columns["task"] == "basic_arithmetic"
    assert first.columns["entry"]["question"] == "Calculate -7 + -6."
    assert first.columns["entry"]["answer"] == "-13"
    assert first.columns["entry"]["metadata"]["source_dataset"] == "basic_arithmetic"


def test_splits_are_deterministic_and_depend_on_the_seed():
    a_train, a_eval = load_splits(SMALL)
    b_train, b_eval = load_splits(SMALL)
    assert a_train == b_train and a_eval == b_eval
    c_train, _ = load_splits(DataConfig(train_size=200, eval_size=50, seed=99))
    assert [ex.question for ex in c_train] != [ex.question for ex in a_train]


def test_eval_never_shares_a_question_with_train():
    train, evals = load_splits(SMALL)
    train_questions = {ex.question for ex in train}
    assert not train_questions & {ex.question for ex in evals}
    eval_keys = {normalise_question(ex.question) for ex in evals}
    assert not {normalise_question(q) for q in train_questions} & eval_keys


def test_eval_is_refilled_when_the_task_space_is_small():
    cfg = DataConfig(task_kwargs=TINY_SPACE, train_size=60, eval_size=30, seed=7)
    train, evals = load_splits(cfg)
    assert len(evals) == 30
    questions = [ex.question for ex in evals]
    assert len(set(questions)) == 30  # no duplicates inside eval either
    assert not set(questions) & {ex.question for ex in train}
    assert all(q.startswith("Calculate ") and " + " in q for q in questions)


def test_eval_too_large_for_the_task_space_says_what_to_change():
    cfg = DataConfig(task_kwargs=TINY_SPACE, train_size=60, eval_size=200, seed=7)
    with pytest.raises(ConfigError, match=r"data\.eval_size=200.*task space is too small.*data\.task_kwargs"):
        load_splits(cfg)


def test_zero_eval_size_gives_an_empty_eval_split():
    train, evals = load_splits(DataConfig(train_size=5, eval_size=0))
    assert len(train) == 5 and evals == []


def test_normalise_question_ignores_case_and_whitespace():
    assert normalise_question("Calculate 3 +  4.") == normalise_question("calculate 3+4.\n")
    assert normalise_question("Calculate 3 + 4.") != normalise_question("Calculate 3 + 5.")


def test_unknown_task_suggests_the_close_name():
    with pytest.raises(ConfigError, match=r"data\.task='basic_arithmetc'.*did you mean 'basic_arithmetic'"):
        load_splits(DataConfig(task="basic_arithmetc"))


def test_unknown_task_without_close_match_lists_tasks():
    with pytest.raises(ConfigError, match=r"known tasks: .*basic_arithmetic"):
        load_splits(DataConfig(task="zzzzzz"))


def test_unknown_task_kwarg_names_the_config_key_and_accepted_keys():
    with pytest.raises(ConfigError, match=r"data\.task_kwargs=.*max_digitz.*Accepted keys: .*max_digits"):
        load_splits(DataConfig(task_kwargs={"max_digitz": 3}))


def test_invalid_task_kwarg_values_forward_the_generator_message():
    with pytest.raises(ConfigError, match=r"data\.task_kwargs=.*max_terms must be >= min_terms"):
        load_splits(DataConfig(task_kwargs={"min_terms": 5, "max_terms": 2}))


def test_seed_in_task_kwargs_is_rejected():
    with pytest.raises(ConfigError, match=r"data\.task_kwargs sets seed.*data\.seed"):
        load_splits(DataConfig(task_kwargs={"seed": 3}))


def test_reward_columns_repeat_each_example():
    exs = [Example("q0", "1", {"task": "t", "entry": {"a": 0}}, 0),
           Example("q1", "2", {"task": "t", "entry": {}}, 1)]
    assert reward_columns(exs, repeat=2) == {"answer": ["1", "1", "2", "2"], "task": ["t", "t", "t", "t"],
                                             "entry": [{"a": 0}, {"a": 0}, {}, {}]}
    assert reward_columns([]) == {"answer": []}


# ---------------------------------------------------------------- prompt rendering


def test_render_prompt_with_system_message():
    ex = Example("Calculate 1 + 2.", "3")
    text = render_prompt(tiny_tokenizer(CHATML), ex, "Box the answer.")
    assert text == "<|system|>Box the answer.\n<|user|>Calculate 1 + 2.\n<|assistant|>"


def test_render_prompt_without_system_message():
    text = render_prompt(tiny_tokenizer(CHATML), Example("Calculate 1 + 2.", "3"), "")
    assert text == "<|user|>Calculate 1 + 2.\n<|assistant|>"


def test_render_prompt_falls_back_when_the_template_rejects_system():
    text = render_prompt(tiny_tokenizer(NO_SYSTEM), Example("Calculate 1 + 2.", "3"), "Box the answer.")
    assert text == "<|user|>Box the answer.\n\nCalculate 1 + 2.\n<|assistant|>"


def test_render_prompt_without_chat_template_says_what_to_do():
    with pytest.raises(ValueError, match="no chat template"):
        render_prompt(tiny_tokenizer(None), Example("q", "1"), "")


# ---------------------------------------------------------------- prompt queue


def test_queue_visits_every_example_once_per_epoch():
    queue = PromptQueue(examples(10), seed=3)
    epoch0 = [ex.index for ex in queue.take(10)]
    assert queue.epoch == 0 and queue.consumed == 10
    epoch1 = [ex.index for ex in queue.take(10)]
    assert queue.epoch == 1 and queue.consumed == 20
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1  # reshuffled each epoch
    assert epoch0 != list(range(10))  # and shuffled at all


def test_queue_take_crosses_the_epoch_boundary():
    reference = PromptQueue(examples(10), seed=3)
    whole = [ex.index for ex in reference.take(20)]
    queue = PromptQueue(examples(10), seed=3)
    first, second = queue.take(7), queue.take(7)
    assert queue.epoch == 1 and queue.consumed == 14
    assert [ex.index for ex in first + second] == whole[:14]
    assert sorted(whole[:10]) == list(range(10)) and sorted(whole[10:]) == list(range(10))


def test_queue_order_depends_on_the_seed():
    a = [ex.index for ex in PromptQueue(examples(50), seed=1).take(50)]
    b = [ex.index for ex in PromptQueue(examples(50), seed=2).take(50)]
    assert a != b and sorted(a) == sorted(b)


def test_queue_state_dict_round_trip_resumes_exactly():
    original = PromptQueue(examples(10), seed=5)
    original.take(13)
    state = original.state_dict()
    assert state["epoch"] == 1 and state["position"] == 3
    resumed = PromptQueue(examples(10), seed=5)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.consumed) == (1, 13)
    assert [ex.index for ex in resumed.take(25)] == [ex.index for ex in original.take(25)]


def test_queue_rejects_state_from_another_setup():
    state = PromptQueue(examples(10), seed=5).state_dict()
    with pytest.raises(ValueError, match="train.seed"):
        PromptQueue(examples(10), seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="saved for 10 examples"):
        PromptQueue(examples(11), seed=5).load_state_dict(state)


def test_queue_edge_cases():
    queue = PromptQueue(examples(3), seed=0)
    assert queue.take(0) == []
    assert len(queue.take(7)) == 7 and queue.epoch == 2 and queue.consumed == 7
    with pytest.raises(ValueError, match="n must be >= 0"):
        queue.take(-1)
    with pytest.raises(ValueError, match="data.train_size"):
        PromptQueue([], seed=0)
