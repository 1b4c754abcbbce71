"""Image columns: every accepted form, errors that name the row and the file before training, prompts with image
blocks, blank controls, and held-out splits that compare images as well as questions."""

import io
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from gpgrl.config import ConfigError, DataConfig
from gpgrl.data import Example, load_splits, render_prompt
from gpgrl.data.images import BLANK_RGB, in_memory, read_images
from gpgrl.data.prompts import chat_messages


def png(path: Path, color: str = "red", size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def png_bytes(color: str = "blue") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_accepted_form_reads_and_loads(tmp_path):
    relative = png(tmp_path / "imgs" / "a.png")
    absolute = png(tmp_path / "b.png", "green")
    data = png_bytes()
    values = ["imgs/a.png", str(absolute), data, Image.new("RGB", (3, 3), "white"), {"bytes": data, "path": None},
              {"bytes": None, "path": str(relative)}]
    refs = read_images(values, "row 1", "image", tmp_path)
    assert [r.load().getpixel((0, 0)) for r in refs] == [(255, 0, 0), (0, 128, 0), (0, 0, 255), (255, 255, 255),
                                                         (0, 0, 255), (255, 0, 0)]
    assert refs[0].digest == refs[5].digest != refs[1].digest  # the digest is the content's
    assert read_images(None, "row 1", "image", tmp_path) == ()
    assert len(read_images("imgs/a.png", "row 1", "image", tmp_path)) == 1  # one image, not a list


@pytest.mark.parametrize("value, fragment", [
    ("missing.png", "no such file"),
    (b"not an image at all", "cannot be read"),
    (42, "expected a path, bytes, a PIL image or a datasets Image"),
])
def test_unreadable_images_name_the_row_the_column_and_the_file(tmp_path, value, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        read_images(value, "data.jsonl line 7", "image", tmp_path)
    assert "data.jsonl line 7: image 0 in column 'image'" in str(err.value)


def test_a_truncated_png_is_refused_before_training(tmp_path):
    good = png(tmp_path / "x.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a", "image": "cut.png"}])
    with pytest.raises(ConfigError, match=r"d.jsonl line 1: image 0 in column 'image' cannot be read"):
        load_splits(DataConfig(path=str(path), eval_split="1.0"))


def test_a_jsonl_with_images_relative_to_its_folder(tmp_path):
    png(tmp_path / "data" / "imgs" / "0.png", "red")
    png(tmp_path / "data" / "imgs" / "1.png", "blue")
    rows = [{"question": "Colour?", "answer": "red", "image": "imgs/0.png"},
            {"question": "Colour?", "answer": "blue", "image": ["imgs/1.png"], "extra": 3}]
    path = write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    train, evals = load_splits(DataConfig(path=str(path), split="train", eval_split="1.0"))
    assert train == [] and [ex.images[0].load().getpixel((0, 0)) for ex in evals] == [(255, 0, 0), (0, 0, 255)]
    assert "image" not in evals[0].columns and evals[1].columns["extra"] == 3  # images travel apart from columns


def test_a_named_image_column_must_exist_and_a_row_without_one_has_no_image(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    _, evals = load_splits(DataConfig(path=str(path), eval_split="1.0"))
    assert evals[0].images == ()
    with pytest.raises(ConfigError, match="data.image_column='picture': no such column"):
        load_splits(DataConfig(path=str(path), eval_split="1.0", image_column="picture"))


def test_conversational_prompts_place_image_blocks_and_their_count_must_match(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png", "blue")
    prompt = [{"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image"},
                                           {"type": "text", "text": "with"}, {"type": "image"}]}]
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": prompt, "answer": "same", "image": ["a.png", "b.png"]}])
    _, (ex,) = load_splits(DataConfig(path=str(path), eval_split="1.0"))
    assert ex.question == "Compare with" and len(ex.images) == 2
    messages = chat_messages(ex, "", "{question}!", with_images=True)
    assert messages[0]["content"] == [{"type": "text", "text": "Compare with!"}, {"type": "image"}, {"type": "image"}]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": prompt, "answer": "x", "image": ["a.png"]}])
    with pytest.raises(ConfigError, match="places 2 image blocks for column 'image', which holds 1 images"):
        load_splits(DataConfig(path=str(bad), eval_split="1.0"))


def test_images_go_before_the_user_text_when_the_prompt_places_none():
    ex = Example("What colour?", "red", images=(in_memory(Image.new("RGB", (2, 2)), "x"),) * 2)
    messages = chat_messages(ex, "Be brief.", "{question} One word.", with_images=True)
    assert messages == [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                        {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                     {"type": "text", "text": "What colour? One word."}]}]
    assert chat_messages(ex, "", "{question}")[0]["content"] == "What colour?"  # text models get plain text


def test_render_prompt_with_image_blocks_through_a_chat_template():
    class Template:
        chat_template = "set"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "|".join(p["type"] if p["type"] == "image" else p["text"] for m in messages for p in m["content"])

    ex = Example("Q", "a", images=(in_memory(Image.new("RGB", (2, 2)), "x"),))
    assert render_prompt(Template(), ex, "", "{question}?", with_images=True) == "image|Q?"


def test_blank_keeps_the_size_and_is_white():
    ref = in_memory(Image.new("RGB", (7, 5), "red"), "x")
    blank = ref.blank()
    assert blank.load().size == (7, 5) and set(blank.load().getdata()) == {BLANK_RGB}
    assert blank.digest != ref.digest


def test_held_out_rows_are_matched_by_question_and_image(tmp_path, caplog):
    png(tmp_path / "r.png", "red")
    png(tmp_path / "b.png", "blue")
    rows = [{"question": "Colour?", "answer": "red", "image": "r.png", "split": "test"},
            {"question": "Colour?", "answer": "blue", "image": "b.png", "split": "train"},
            {"question": "Colour?", "answer": "red", "image": "r.png", "split": "train"}]
    (tmp_path / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    train_path = write_jsonl(tmp_path / "train.jsonl", rows[1:])
    # the same question with another image is a different item; the same image and question is the same item
    from gpgrl.data.examples import _without_overlap

    (held,) = load_splits(DataConfig(path=str(tmp_path / "test.jsonl"), eval_split="1.0"))[1]
    train = load_splits(DataConfig(path=str(train_path), eval_split="1.0"))[1]
    with caplog.at_level(logging.WARNING, logger="gpgrl.data"):
        kept = _without_overlap(train, [held])
    assert [ex.answer for ex in kept] == ["blue"]
    assert "with the same images" in caplog.text


def test_sharegpt_conversations_with_image_markers_and_the_gold_as_the_final_assistant_message(tmp_path):
    png(tmp_path / "imgs" / "a.png", "red")
    png(tmp_path / "imgs" / "b.png", "blue")
    rows = [{"conversations": [{"from": "human", "value": "<img>imgs/a.png</img>\n Find the cup."},
                               {"from": "gpt", "value": "(1,2),(3,4)"}]},
            {"messages": [{"role": "user", "content": "<image> Left or right? <image>"},
                          {"role": "assistant", "content": "left"}], "images": ["imgs/a.png", "imgs/b.png"]}]
    one = write_jsonl(tmp_path / "one.jsonl", rows[:1])
    _, (ex,) = load_splits(DataConfig(path=str(one), eval_split="1.0", prompt_column="conversations",
                                      answer_column=""))
    assert ex.answer == "(1,2),(3,4)" and ex.question == "Find the cup."
    parts = [{"type": "image"}, {"type": "text", "text": "\n Find the cup."}]
    assert ex.messages == ({"role": "user", "content": parts},)
    assert ex.images[0].load().getpixel((0, 0)) == (255, 0, 0)
    two = write_jsonl(tmp_path / "two.jsonl", rows[1:])
    _, (ex,) = load_splits(DataConfig(path=str(two), eval_split="1.0", prompt_column="messages", answer_column="",
                                      image_column="images"))
    assert [p["type"] for p in ex.messages[0]["content"]] == ["image", "text", "image"] and ex.answer == "left"
    assert [i.load().getpixel((0, 0)) for i in ex.images] == [(255, 0, 0), (0, 0, 255)]
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ConfigError, match="data.answer_column='' needs conversations"):
        load_splits(DataConfig(path=str(plain), eval_split="1.0", answer_column=""))
    no_gold = write_jsonl(tmp_path / "nogold.jsonl", [{"question": [{"role": "user", "content": "q"}]}])
    with pytest.raises(ConfigError, match="which has none"):
        load_splits(DataConfig(path=str(no_gold), eval_split="1.0", answer_column=""))


def test_tagged_answers_and_box_golds(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q1", "answer": "<answer> 140 </answer>"},
                                              {"question": "q2", "answer": "no tags"},
                                              {"question": "q3", "answer": [1, 2.5, 3, 4]}])
    _, evals = load_splits(DataConfig(path=str(path), eval_split="1.0", answer_format="tagged"))
    assert [ex.answer for ex in evals] == ["140", "no tags", "[1, 2.5, 3, 4]"]
