"""Tests of gpgrl.data and gpgrl.sources: reasoning-gym and dataset splits (files, Hugging Face layouts, CHAMP),
clear data errors, prompt rendering and the resumable prompt queue."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from gpgrl.config import ConfigError, DataConfig
from gpgrl.data import Example, PromptQueue, load_splits, normalise_question, render_prompt, reward_columns
from gpgrl.data.prompts import scored_text

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


def test_render_prompt_appends_the_response_prefix_after_the_generation_prompt():
    text = render_prompt(tiny_tokenizer(CHATML), Example("Calculate 1 + 2.", "3"), "", response_prefix="The answer is")
    assert text == "<|user|>Calculate 1 + 2.\n<|assistant|>The answer is"
    assert scored_text("The answer is", " 3.") == "The answer is 3."


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


# ---------------------------------------------------------------- datasets: files, Hugging Face layouts, CHAMP

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FILES, HUB = FIXTURES / "files", FIXTURES / "hub"
RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ARITH = [("What is 2 + 3?", "5", "add"), ("What is 7 - 4?", "3", "sub"), ("What is 6 * 7?", "42", "mul"),
         ("What is 1/2 + 1/4?", "3/4", "add"), ("What is 9 - 10?", "-1", "sub")]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep `datasets`' Arrow cache of the local fixture datasets out of the home directory."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def data(**kwargs) -> DataConfig:
    return DataConfig(**{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()})


def recipe_data(name: str, **overrides) -> DataConfig:
    raw = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())["data"]
    return data(**{**raw, **overrides})


def rows(examples) -> list[tuple[str, str, str]]:
    return [(ex.question, ex.answer, ex.columns.get("topic")) for ex in examples]


@pytest.mark.parametrize("name", ["arith.jsonl", "arith.json", "arith.csv", "arith.parquet"])
def test_every_file_format_gives_the_same_rows(name):
    train, evals = load_splits(data(path=FILES / name))
    assert rows(train) == ARITH and evals == []
    assert [ex.index for ex in train] == [0, 1, 2, 3, 4]
    assert train[0].columns == {"question": "What is 2 + 3?", "topic": "add"}  # 'answer' is reserved
    assert reward_columns(train[:2]) == {"answer": ["5", "3"], "question": ["What is 2 + 3?", "What is 7 - 4?"],
                                         "topic": ["add", "sub"]}


def test_source_is_inferred_from_the_path():
    assert DataConfig().resolved_source() == "reasoning_gym"
    assert data(path="x/data.JSONL").resolved_source() == "file"
    assert data(path="openai/gsm8k").resolved_source() == "hf"
    assert data(path=HUB / "math500").resolved_source() == "hf"  # a local dataset directory
    assert data(source="champ").resolved_source() == "champ"


def test_fractional_eval_split_is_seeded_disjoint_and_in_file_order():
    cfg = data(path=FILES / "arith.jsonl", eval_split="0.4")
    train, evals = load_splits(cfg)
    assert len(evals) == 2 and len(train) == 3  # round(0.4 * 5) rows held out
    assert sorted(rows(train) + rows(evals)) == sorted(ARITH)
    assert [ARITH.index(r) for r in rows(evals)] == sorted(ARITH.index(r) for r in rows(evals))
    assert [ex.index for ex in evals] == [0, 1] and [ex.index for ex in train] == [0, 1, 2]
    assert load_splits(cfg) == (train, evals)
    other = [rows(load_splits(data(path=FILES / "arith.jsonl", eval_split="0.4", seed=s))[1]) for s in range(6)]
    assert len({tuple(map(tuple, o)) for o in other}) > 1  # the held-out rows depend on data.seed


def test_eval_split_1_holds_out_everything():
    train, evals = load_splits(data(path=FILES / "arith.csv", eval_split="1.0"))
    assert train == [] and rows(evals) == ARITH


def test_training_rows_repeating_an_eval_question_are_dropped(tmp_path, caplog):
    path = tmp_path / "dups.jsonl"
    questions = ["Q1", "q 1", " Q1", "Q1"]  # all the same question once normalised
    path.write_text("".join(json.dumps({"question": q, "answer": str(i)}) + "\n" for i, q in enumerate(questions)))
    with caplog.at_level(logging.WARNING, logger="gpgrl.data"):
        train, evals = load_splits(data(path=path, eval_split="0.25"))
    assert len(evals) == 1 and train == []  # whichever row is held out, the other three repeat it
    assert "dropped 3 of 3 training rows whose question also occurs in the eval split" in caplog.text


def test_named_eval_split_keeps_eval_whole_and_cleans_train(tmp_path, caplog):
    hub = tmp_path / "ds"
    hub.mkdir()
    (hub / "train.jsonl").write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n"
                                             for q in ["A?", "B?", "C?"]))
    (hub / "test.jsonl").write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n" for q in ["B?", "D?"]))
    with caplog.at_level(logging.WARNING, logger="gpgrl.data"):
        train, evals = load_splits(data(path=hub, eval_split="test"))
    assert [ex.question for ex in train] == ["A?", "C?"] and [ex.question for ex in evals] == ["B?", "D?"]
    assert "dropped 1 of 3 training rows whose question also occurs in the eval split" in caplog.text


def test_max_rows_reads_the_first_rows():
    train, _ = load_splits(data(path=FILES / "arith.parquet", max_rows=2))
    assert rows(train) == ARITH[:2]
    train, _ = load_splits(data(path=HUB / "gsm8k", subset="main", answer_format="gsm8k", max_rows=3))
    assert len(train) == 3


def test_gsm8k_recipe_on_a_local_copy_of_the_hub_layout():
    train, evals = load_splits(recipe_data("gsm8k", path=HUB / "gsm8k"))
    assert [ex.answer for ex in train] == ["31", "800", "60", "2500"]  # '#### 2,500' loses its separator
    assert [ex.answer for ex in evals] == ["17", "42"]
    assert evals[0].question.startswith("Mia has 8 marbles")
    assert "#### 17" not in evals[0].question


def test_gsm8k_recipe_renders_the_paper_prompt_without_system_message():
    cfg = recipe_data("gsm8k", path=HUB / "gsm8k")
    _, evals = load_splits(cfg)
    text = render_prompt(tiny_tokenizer(CHATML), evals[1], cfg.system_prompt, cfg.prompt_template)
    assert text == ("<|user|>Solve the following math problem efficiently and clearly. The last line of your response "
                    "should be of the following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it "
                    "is correct' (without quotes) where ANSWER is just the final number or expression that solves the "
                    "problem. Think step by step before answering.\n\nA box holds 6 eggs. How many eggs are in 7 "
                    "boxes?\n<|assistant|>")


def test_math500_recipe_is_eval_only_and_grouped_by_subject():
    train, evals = load_splits(recipe_data("math500", path=HUB / "math500"))
    assert train == []
    assert [(ex.answer, ex.group) for ex in evals] == [("\\frac{5}{6}", "Prealgebra"), ("4", "Algebra"),
                                                        ("5\\sqrt{2}", "Algebra")]
    assert evals[0].columns["level"] == 1 and evals[0].columns["unique_id"] == "test/prealgebra/1.json"


@pytest.mark.parametrize(("recipe", "answers"), [("aime24", ["1", "30"]), ("amc23", ["55", "27"])])
def test_aime24_and_amc23_recipes_read_their_only_split(recipe, answers):
    train, evals = load_splits(recipe_data(recipe, path=HUB / recipe))
    assert train == [] and [ex.answer for ex in evals] == answers  # AMC's 55.0 and 27.0 become integers
    assert evals[0].question.startswith("Find the remainder" if recipe == "aime24" else "What is $1 + 2")


def test_boxed_answer_format_reads_the_last_box():
    train, _ = load_splits(data(path=HUB / "math500", split="test", answer_column="solution",
                                answer_format="boxed", prompt_column="problem"))
    assert [ex.answer for ex in train] == ["\\frac{5}{6}", "4", "5\\sqrt{2}"]
    assert train[0].columns["solution"] == "The sum is $\\boxed{\\frac{5}{6}}$."  # the raw column is kept


def test_conversational_prompts():
    train, _ = load_splits(data(path=FILES / "chat.jsonl", prompt_column="prompt"))
    assert [(ex.question, ex.answer) for ex in train] == [("What is 2 + 2?", "4"), ("What is 3 + 3?", "6"),
                                                          ("Now add 1 to it.", "8")]
    tok = tiny_tokenizer(CHATML)
    assert render_prompt(tok, train[0], "Box it.", "{question} Answer in \\boxed{}.") == \
        "<|system|>Box it.\n<|user|>What is 2 + 2? Answer in \\boxed{}.\n<|assistant|>"
    # the row's own system message wins over data.system_prompt
    assert render_prompt(tok, train[1], "Box it.") == "<|system|>You are terse.\n<|user|>What is 3 + 3?\n<|assistant|>"
    # earlier turns are kept; the template applies to the last user message
    assert render_prompt(tok, train[2], "", "{question}!") == \
        "<|user|>Name a number.\n<|assistant|>7\n<|user|>Now add 1 to it.!\n<|assistant|>"
    # a template without a system role: the system message goes into the first user message
    assert render_prompt(tiny_tokenizer(NO_SYSTEM), train[1], "") == \
        "<|user|>You are terse.\n\nWhat is 3 + 3?\n<|assistant|>"


def test_reasoning_gym_examples_are_grouped_by_task():
    train, evals = load_splits(DataConfig(train_size=3, eval_size=2))
    assert {ex.group for ex in train + evals} == {"basic_arithmetic"} and train[0].messages == ()


def test_champ_is_a_bundled_eval_set():
    train, evals = load_splits(data(source="champ", eval_split="1.0", group_column="category"))
    assert train == [] and len(evals) == 270
    assert Counter(ex.group for ex in evals) == {"Number-Theory": 80, "Inequality": 50, "Polynomial": 50,
                                                 "Sequence": 50, "Combinatorics": 40}
    first = evals[0]
    assert first.columns["identifier"] == "P_Combinatorics_1" and first.answer == "239"
    second = evals[1]
    assert second.columns["raw_answer"] == "C(10, 5), or equivalently 252" and second.answer == "252"
    train, evals = load_splits(data(source="champ", max_rows=10, eval_split="0.2"))
    assert (len(train), len(evals)) == (8, 2)


def test_champ_answer_cleanup():
    from gpgrl.data.sources import champ_answer

    assert champ_answer("98 values") == "98"
    assert champ_answer("sum_(i=1)^n i^2, or equivalently n(n+1)(2n+1)/6") == "n(n+1)(2n+1)/6"
    assert champ_answer("x(n)<y(n-1) for all n≥3") == "x(n)<y(n-1) for all n≥3"


# ---------------------------------------------------------------- dataset errors name the file, row and key


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("column", "key"), [("prompt_column", "data.prompt_column"),
                                             ("answer_column", "data.answer_column"),
                                             ("group_column", "data.group_column")])
def test_missing_column_names_the_file_row_and_columns(column, key):
    path = FILES / "arith.jsonl"
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}='problem': no such column in {re.escape(str(path))} "
                                          r"line 1 \(its columns: question, answer, topic\)"):
        load_splits(data(path=path, **{column: "problem"}))


def test_missing_column_in_a_hub_dataset_names_split_and_row():
    with pytest.raises(ConfigError, match=r"data\.prompt_column='question': no such column in dataset '.*math500' "
                                          r"split 'test' row 1 \(its columns: problem, solution, answer"):
        load_splits(data(path=HUB / "math500", split="", eval_split="test"))


@pytest.mark.parametrize(("name", "text", "pattern"), [
    ("empty.jsonl", "", r"data\.path='.*empty\.jsonl' has no rows \(data\.split='train'\)"),
    ("blank.jsonl", "\n\n", r"has no rows"),
    ("header.csv", "question,answer\n", r"has no rows"),
    ("bad.jsonl", '{"question": "a", "answer": "1"}\n\n{"question": "b", "answer": \n',
     r"bad\.jsonl' line 3 is not valid JSON"),
    ("list.jsonl", '{"question": "a", "answer": "1"}\n[1, 2]\n', r"line 2 is a JSON list, not an object"),
    ("bad.json", '{"question": "a"}', r"holds a JSON dict: expected a list of objects"),
    ("ragged.csv", "question,answer\na,1\nb,2,3\n", r"ragged\.csv' line 3 has a different number of fields than "
                                                    r"the header \(2\)"),
    ("short.csv", "question,answer\na\n", r"short\.csv' line 2 has a different number of fields"),
    ("broken.parquet", "not parquet", r"is not a readable parquet file"),
    ("null.jsonl", '{"question": null, "answer": "1"}\n', r"null\.jsonl line 1: data\.prompt_column 'question' is "
                                                         r"None; expected non-empty text"),
    ("noans.jsonl", '{"question": "q", "answer": ""}\n', r"line 1: the gold answer in column 'answer' is empty"),
    ("listans.jsonl", '{"question": "q", "answer": [1]}\n', r"line 1: data\.answer_column 'answer' is \[1\]"),
    ("chat.jsonl", '{"question": [{"role": "assistant", "content": "hi"}], "answer": "1"}\n',
     r"line 1: the messages in column 'question' must end with a 'user' message"),
    ("chat2.jsonl", '{"question": [{"role": "user"}], "answer": "1"}\n', r"line 1: message 0 of column 'question'"),
])
def test_unreadable_data_names_the_file_and_row(tmp_path, name, text, pattern):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=pattern):
        load_splits(data(path=path))


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("question,answer\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.csv' is not UTF-8 text"):
        load_splits(data(path=path))


@pytest.mark.parametrize(("fmt", "text", "pattern"), [
    ("gsm8k", "She has 5.", r"line 1: data\.answer_format=gsm8k but column 'answer' has no '####' final answer"),
    ("boxed", "It is 5.", r"line 1: data\.answer_format=boxed but column 'answer' has no \\boxed\{\.\.\.\}"),
])
def test_answer_format_errors(tmp_path, fmt, text, pattern):
    path = write(tmp_path, "a.jsonl", json.dumps({"question": "q", "answer": text}) + "\n")
    with pytest.raises(ConfigError, match=pattern):
        load_splits(data(path=path, answer_format=fmt))


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path='nope\.jsonl' does not exist"):
        load_splits(data(path="nope.jsonl"))
    with pytest.raises(ConfigError, match=r"unknown file type '\.txt'; use one of \.jsonl, \.json, \.csv, \.parquet"):
        load_splits(data(path=write(tmp_path, "a.txt", "x"), source="file"))


def test_hub_errors_name_the_dataset_and_key(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigError, match=r"data\.path='openai/gsm8k': datasets\.load_dataset could not load "
                                          r"dataset 'openai/gsm8k' \(subset 'main'\) split 'train' \(ConnectionError: "
                                          r".*\)\. Check data\.path, data\.subset and data\.split; offline, give a "
                                          r"local file"):
        load_splits(data(path="openai/gsm8k", subset="main"))


def test_unknown_split_of_a_local_dataset_names_the_key():
    with pytest.raises(ConfigError, match=r"split 'validation' \(ValueError: Unknown split.*data\.eval_split"):
        load_splits(data(path=HUB / "gsm8k", subset="main", answer_format="gsm8k", eval_split="validation"))


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"prompt_column": "problem"}, r"data\.prompt_column='problem' has no effect here \(prompts come from "
                                   r"reasoning-gym task 'basic_arithmetic' because data\.path is empty\)"),
    ({"path": "a.jsonl", "eval_size": 50}, r"data\.eval_size=50 has no effect here \(prompts come from the file "
                                           r"data\.path='a\.jsonl'\)"),
    ({"path": "a.jsonl", "subset": "main"}, r"data\.subset='main' has no effect here"),
    ({"source": "champ", "path": "x"}, r"data\.path='x' has no effect here \(prompts come from the bundled CHAMP"),
    ({"source": "file"}, r"data\.source=file needs data\.path"),
    ({"source": "web"}, r"data\.source='web' is not one of"),
    ({"path": "a.jsonl", "answer_format": "last"}, r"data\.answer_format='last' is not one of 'plain', 'gsm8k'"),
    ({"path": "a.jsonl", "max_rows": -1}, r"data\.max_rows=-1 must be >= 0"),
    ({"path": "a.jsonl", "eval_split": "0"}, r"data\.eval_split='0' must be a fraction in \(0, 1\]"),
    ({"path": "a.jsonl", "eval_split": "1.5"}, r"must be a fraction in \(0, 1\]"),
    ({"path": "a.jsonl", "eval_split": "test"}, r"data\.eval_split='test': a file source has no named splits"),
    ({"path": "a.jsonl", "split": "test"}, r"data\.split='test': a file source is one split called 'train'"),
    ({"path": "org/ds", "split": "", "eval_split": "0.1"}, r"data\.eval_split=0\.1 is a fraction of data\.split, "
                                                           r"which is empty"),
])
def test_data_config_errors_name_the_key(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        DataConfig(**kwargs)


def test_empty_train_split_gives_a_clear_queue_error():
    with pytest.raises(ValueError, match=r"data\.split and data\.eval_split"):
        PromptQueue([], seed=0)
