"""The synthetic shapes tasks: deterministic from data.seed, golds that agree with the pixels, a held-out split that
never repeats a training image, and config errors that name the key."""

import pytest

from gpgrl.config import ConfigError, build_config
from gpgrl.data import load_splits
from gpgrl.data.shapes import COLORS, TASKS, draw_item, labels
from gpgrl.rewards import iou


def shapes(task: str, *extra: str):
    cfg = build_config(overrides=["data.source=shapes", f"data.task={task}", "data.train_size=60", "data.eval_size=40",
                                  *extra])
    return load_splits(cfg.data)


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_from_the_seed_and_held_out_images_are_new(task):
    train, evals = shapes(task)
    again, evals_again = shapes(task)
    assert [ex.images[0].digest for ex in train + evals] == [ex.images[0].digest for ex in again + evals_again]
    other, _ = shapes(task, "data.seed=7")
    assert [ex.images[0].digest for ex in other] != [ex.images[0].digest for ex in train]
    train_images = {ex.images[0].digest for ex in train}
    assert not train_images & {ex.images[0].digest for ex in evals}
    assert len({ex.images[0].digest for ex in evals}) == len(evals) == 40
    assert all(ex.group == f"shapes/{task}" and ex.columns["task"] == f"shapes/{task}" for ex in train + evals)
    if labels(task) is not None:
        assert all(ex.answer in labels(task) and ex.columns["labels"] == list(labels(task)) for ex in evals)


def _pixels_of(image, rgb):
    width, height = image.size
    return [(x, y) for y in range(height) for x in range(width) if image.getpixel((x, y)) == rgb]


@pytest.mark.parametrize("seed", range(12))
def test_the_golds_agree_with_the_pixels(seed):
    color = draw_item("color", seed, 56)
    (shape,) = color.shapes
    assert color.answer == shape.color and _pixels_of(color.image, COLORS[shape.color])
    count = draw_item("count", seed, 56)
    assert count.answer == str(len(count.shapes)) and 1 <= len(count.shapes) <= 4
    position = draw_item("position", seed, 56)
    a, b = position.shapes
    centre = lambda s: ((s.box[0] + s.box[2]) / 2, (s.box[1] + s.box[3]) / 2)  # noqa: E731
    (ax, ay), (bx, by) = centre(a), centre(b)
    expected = {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}
    assert expected[position.answer] and a.name in position.question and b.name in position.question
    grounding = draw_item("grounding", seed, 56)
    target = next(s for s in grounding.shapes if s.name in grounding.question)
    xs, ys = zip(*_pixels_of(grounding.image, COLORS[target.color]), strict=True)
    drawn = [min(xs), min(ys), max(xs), max(ys)]  # the box of the target's pixels (colours are distinct)
    assert iou(["q"], [str(drawn)], answer=[grounding.answer]) == [pytest.approx(1.0, abs=0.15)]


def test_shape_colors_choose_the_palette():
    train, evals = shapes("color", "data.shape_colors=[red,blue]")
    assert {ex.answer for ex in train + evals} == {"red", "blue"} and evals[0].columns["labels"] == ["red", "blue"]
    assert all("red" in ex.question and "blue" in ex.question and "green" not in ex.question for ex in evals)
    with pytest.raises(ConfigError, match="name distinct colours"):
        shapes("color", "data.shape_colors=[red,pink]")
    with pytest.raises(ConfigError, match="needs at least 2 colours"):
        shapes("position", "data.shape_colors=[red]")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.task='basic_arithmetic' is not a shapes task"):
        shapes("basic_arithmetic")
    with pytest.raises(ConfigError, match="data.image_size=20 is too small"):
        shapes("color", "data.image_size=20")
    with pytest.raises(ConfigError, match="data.path='x.jsonl' has no effect"):
        build_config(overrides=["data.source=shapes", "data.task=color", "data.path=x.jsonl"])
    with pytest.raises(ConfigError, match="data.image_size=90 has no effect"):
        build_config(overrides=["data.image_size=90"])  # reasoning-gym prompts draw no images
