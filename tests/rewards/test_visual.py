"""Visual rewards (label, choice, iou, giou) and the one answer extraction every reward reads through."""

import doctest

import pytest

import gpgrl.rewards.answers as answers_module
import gpgrl.rewards.visual as visual_module
from gpgrl.config import ConfigError
from gpgrl.rewards import REWARDS, Label, RewardSet, accuracy, box_giou, box_iou, choice, giou, iou, label, parse_box
from gpgrl.rewards.answers import answer_part, completion_text


def test_doctests():
    for module in (visual_module, answers_module):
        result = doctest.testmod(module, verbose=False)
        assert result.attempted >= 2 and result.failed == 0


def test_answer_part_reads_the_first_answer_block_else_the_whole_completion():
    assert answer_part("<think>hmm</think>\n<answer>\n blue \n</answer> trailing") == "blue"
    assert answer_part("<answer>1</answer><answer>2</answer>") == "1"
    assert answer_part("  no tags here  ") == "no tags here"
    assert answer_part("<answer>never closed") == "<answer>never closed"
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x"


@pytest.mark.parametrize("said, gold, expected", [
    ("Golden_Retriever", "golden retriever", 1.0),  # case, underscores, spaces
    ("<answer>  Boeing 737-800. </answer>", "boeing 737-800", 1.0),  # surrounding punctuation only
    ("boeing 737", "boeing 737-800", 0.0),
    ("   ", "red", None),  # nothing to read: no verdict, counted invalid
])
def test_label_normalises_case_spaces_underscores_and_edge_punctuation(said, gold, expected):
    assert label(["q"], [said], answer=[gold]) == [expected]


def test_label_substring_is_visual_rfts_rule_and_mention_reads_free_text_against_candidates():
    substring = Label(substring=True)
    assert substring(["q"] * 3, ["a golden retriever", "retriever", "cat"], answer=["golden retriever"] * 3) == \
        [1.0, 1.0, 0.0]
    mention = Label(mention=True)
    candidates = [["red", "green", "blue"]] * 4
    assert mention(["q"] * 4, ["The shape is red.", "red, no, blue", "It is Green!", "I see a shape"],
                   answer=["red", "red", "green", "red"], labels=candidates) == [1.0, 0.0, 1.0, None]
    assert mention(["q"], ["reddish"], answer=["red"], labels=[["red"]]) == [None]  # whole words only
    with pytest.raises(ValueError, match="needs a 'labels' column"):
        mention(["q"], ["red"], answer=["red"])
    with pytest.raises(ValueError, match="choose one"):
        Label(substring=True, mention=True)


@pytest.mark.parametrize("said, expected", [
    ("(B)", 1.0), ("B", 1.0), ("B. 4 shapes", 1.0), ("The answer is (B).", 1.0), ("Answer: b", 1.0),
    ("(A)", 0.0), ("4", 1.0), ("three", None), ("", None),
])
def test_choice_reads_letters_in_every_form_and_option_texts_from_the_prompt(said, expected):
    prompt = "How many shapes are there? (A) 3 (B) 4 (C) 5"
    assert choice([prompt], [f"<answer>{said}</answer>"], answer=["(B)"]) == [expected]


def test_choice_takes_options_from_a_column_and_a_gold_given_as_text():
    options = [["a cat", "a dog"]] * 2
    assert choice(["q", "q"], ["B", "a cat"], answer=["a dog", "a dog"], options=options) == [1.0, 0.0]
    assert choice(["no options here"], ["yes"], answer=["Yes"]) == [1.0]  # no options at all: the texts compare


def test_parse_box_formats():
    assert parse_box("[10, 20, 30, 40]") == (10.0, 20.0, 30.0, 40.0)
    assert parse_box("(10,20),(30,40)") == (10.0, 20.0, 30.0, 40.0)
    assert parse_box("first (1,2),(3,4) then [5, 6, 7, 8]") == (1.0, 2.0, 3.0, 4.0)  # the first box
    assert parse_box([[1, 2], [3, 4]]) == (1.0, 2.0, 3.0, 4.0)
    assert parse_box("[-1.5, 2, 3, 4]") == (-1.5, 2.0, 3.0, 4.0)
    assert parse_box("[1, 2, 3]") is None and parse_box([1, 2, "3", 4]) is None and parse_box([True] * 4) is None


def test_iou_and_giou_by_hand():
    a, b = (0, 0, 10, 10), (5, 0, 15, 10)
    # intersection 5 x 10 = 50, union 100 + 100 - 50 = 150, enclosing 15 x 10 = 150
    assert box_iou(a, b) == pytest.approx(1 / 3)
    assert box_giou(a, b) == pytest.approx(1 / 3 - 0 / 150)
    far = (20, 0, 30, 10)  # disjoint: union 200, enclosing 30 x 10 = 300
    assert box_iou(a, far) == 0.0 and box_giou(a, far) == pytest.approx(-100 / 300)
    assert box_iou(a, (10, 10, 0, 0)) == 0.0  # inverted box: area 0


def test_box_rewards_read_the_answer_block_and_count_unparseable_answers():
    gold = ["<answer>[0, 0, 10, 10]</answer>", [0, 0, 10, 10], "(0,0),(10,10)"]
    said = ["<think>left</think><answer>[5, 0, 15, 10]</answer>", "(0,0),(10,10)", "no box at all"]
    assert iou(["q"] * 3, said, answer=gold) == [pytest.approx(1 / 3), 1.0, None]
    assert giou(["q"] * 3, said, answer=gold) == [pytest.approx(1 + 1 / 3), 2.0, None]
    assert giou(["q"], ["  [0, 0, 10, 10] "], answer=["[0, 0, 10, 10]"]) == [2.0]  # equal text: 2.0
    with pytest.raises(ValueError, match="is not a box"):
        iou(["q"], ["[0, 0, 1, 1]"], answer=["red"])


def test_every_visual_reward_runs_in_a_reward_set_without_raising_on_garbage():
    reward_set = RewardSet(["label", "choice", "iou", "giou"], [1.0, 1.0, 1.0, 1.0])
    garbage = ["", "\x00\x01", "<answer></answer>", "[[[", "(A", "<answer>[1, 2, 3, 4]"]
    out = reward_set(["(A) x (B) y"] * len(garbage), garbage, {"answer": ["[0, 0, 2, 2]"] * len(garbage)})
    assert all(v >= 0.0 for v in out.total)
    assert out.invalid["iou"] >= 4 and out.invalid["label"] >= 1 and out.errors == {k: 0 for k in out.errors}


def test_registered_by_name_with_typed_parameters():
    assert {"label", "choice", "iou", "giou"} <= set(REWARDS)
    reward_set = RewardSet(["label"], [1.0], {"label": {"mention": True}})
    assert reward_set(["q"], ["It is red"], {"answer": ["red"], "labels": [["red", "blue"]]}).total == [1.0]
    with pytest.raises(ConfigError, match="must be true or false"):
        RewardSet(["label"], [1.0], {"label": {"mention": 1}})


def test_accuracy_reads_the_answer_block_as_an_anchor():
    completions = ["<think>3 + 4</think><answer>7</answer>", r"<answer>\boxed{7}</answer>", "7",
                   "<answer>8</answer> but \\boxed{7}"]
    assert accuracy(["q"] * 4, completions, answer=["7"] * 4) == [1.0, 1.0, 0.0, 0.0]
