"""Synthetic visual tasks drawn with PIL: offline, deterministic from data.seed, with a clean held-out split.

`data.source=shapes` with `data.task` one of:

* `color`: one shape; "What color is the shape? Answer blue, red, ... or green."; gold: the colour name (reward
  `label`);
* `count`: one to four shapes; "How many shapes are in the image? Answer 1, 2, 3 or 4."; gold: the number (reward
  `label`);
* `position`: two shapes of different colours and kinds, clearly apart along one axis; "Where is the red circle
  relative to the blue square? Answer above, left, below or right."; gold: left / right / above / below
  (reward `label`);

The questions list their candidate answers, in an order drawn per item so that no answer gains from its place.
* `grounding`: one to three shapes with distinct colours; "Give the bounding box of the red circle as
  [x1, y1, x2, y2] in pixels."; gold: the box as "[x1, y1, x2, y2]" (rewards `iou`, `giou`).

The classification tasks give every item a `labels` column with their candidate answers (`labels`), so that the
`label` reward with mention=true can read a free-form answer ("The shape is red.").

Shapes are circles, squares and triangles in six colours (or those of `data.shape_colors`) on a white canvas of
`data.image_size` pixels. Item `i`
of a split is drawn from its own seed (data.seed, task, split, i). The held-out split never contains an image that
is pixel-identical to a training image (so no item repeats; the question text alone repeats by design), and has
no repeats within itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from gpgrl.config import ConfigError

COLORS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (40, 70, 220), "yellow": (235, 200, 20),
          "purple": (140, 50, 170), "orange": (245, 130, 20)}
KINDS = ("circle", "square", "triangle")
TASKS = ("color", "count", "position", "grounding")
BACKGROUND = (255, 255, 255)
MAX_ATTEMPTS = 200
"""Placement attempts per item before a smaller layout is tried (shapes must not overlap)."""


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (inclusive pixel bounds of the drawn shape)

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Item:
    """One drawn question: the image (PIL), the question, the gold answer and the shapes drawn."""

    image: Any
    question: str
    answer: str
    shapes: tuple[Shape, ...]


def _draw(shapes: tuple[Shape, ...], size: int) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), BACKGROUND)
    pen = ImageDraw.Draw(image)
    for s in shapes:
        x1, y1, x2, y2 = s.box
        fill = COLORS[s.color]
        if s.kind == "circle":
            pen.ellipse(s.box, fill=fill)
        elif s.kind == "square":
            pen.rectangle(s.box, fill=fill)
        else:
            pen.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)
    return image


def _overlaps(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def _place(rng: random.Random, size: int, count: int, scale: float) -> list[tuple[int, int, int, int]]:
    """`count` non-overlapping square boxes with sides of about `scale` of the canvas."""
    lo, hi = max(6, int(size * scale * 0.7)), max(7, int(size * scale))
    for _ in range(MAX_ATTEMPTS):
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(count):
            side = rng.randint(lo, hi)
            x, y = rng.randint(0, size - side - 1), rng.randint(0, size - side - 1)
            box = (x, y, x + side, y + side)
            if any(_overlaps(box, b, 2) for b in boxes):
                break
            boxes.append(box)
        if len(boxes) == count:
            return boxes
    return _place(rng, size, count, scale * 0.8)


def _shapes(rng: random.Random, boxes: list[tuple[int, int, int, int]], distinct: bool,
            palette: tuple[str, ...]) -> tuple[Shape, ...]:
    """Kinds and colours (from `palette`) for the boxes; `distinct`: no two shapes share a colour."""
    colors = rng.sample(palette, len(boxes)) if distinct else [rng.choice(palette) for _ in boxes]
    return tuple(Shape(rng.choice(KINDS), c, b) for c, b in zip(colors, boxes, strict=True))


def _options(rng: random.Random, labels: tuple[str, ...]) -> str:
    """The candidate answers in a random order, so that no answer gains from its place in the list."""
    shuffled = rng.sample(labels, len(labels))
    return ", ".join(shuffled[:-1]) + " or " + shuffled[-1]


def _color(rng: random.Random, size: int, palette: tuple[str, ...]) -> Item:
    shapes = _shapes(rng, _place(rng, size, 1, 0.9), True, palette)
    question = f"What color is the shape? Answer {_options(rng, palette)}."
    return Item(_draw(shapes, size), question, shapes[0].color, shapes)


def _count(rng: random.Random, size: int, palette: tuple[str, ...]) -> Item:
    shapes = _shapes(rng, _place(rng, size, rng.randint(1, 4), 0.3), False, palette)
    return Item(_draw(shapes, size), "How many shapes are in the image? Answer 1, 2, 3 or 4.", str(len(shapes)),
                shapes)


def _relation(a: Shape, b: Shape) -> str | None:
    """Where a is relative to b, when they are clearly apart along one axis only; None otherwise."""
    ax, ay = (a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2
    bx, by = (b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2
    dx, dy = ax - bx, ay - by
    if abs(dx) > 2 * abs(dy) and abs(dx) > (a.box[2] - a.box[0]):
        return "left" if dx < 0 else "right"
    if abs(dy) > 2 * abs(dx) and abs(dy) > (a.box[3] - a.box[1]):
        return "above" if dy < 0 else "below"
    return None


def _position(rng: random.Random, size: int, palette: tuple[str, ...]) -> Item:
    for _ in range(MAX_ATTEMPTS):
        shapes = _shapes(rng, _place(rng, size, 2, 0.3), True, palette)
        relation = _relation(*shapes) if shapes[0].kind != shapes[1].kind else None
        if relation is not None:
            question = (f"Where is the {shapes[0].name} relative to the {shapes[1].name}? Answer "
                        f"{_options(rng, ('left', 'right', 'above', 'below'))}.")
            return Item(_draw(shapes, size), question, relation, shapes)
    raise RuntimeError(f"no two shapes clearly apart on a {size} x {size} canvas: raise data.image_size")


def _grounding(rng: random.Random, size: int, palette: tuple[str, ...]) -> Item:
    shapes = _shapes(rng, _place(rng, size, rng.randint(1, min(3, len(palette))), 0.4), True, palette)
    target = rng.choice(shapes)
    question = f"Give the bounding box of the {target.name} as [x1, y1, x2, y2] in pixels."
    return Item(_draw(shapes, size), question, "[{}, {}, {}, {}]".format(*target.box), shapes)


DRAW = {"color": _color, "count": _count, "position": _position, "grounding": _grounding}
MIN_COLORS = {"color": 2, "count": 1, "position": 2, "grounding": 1}


def labels(task: str, palette: tuple[str, ...] = tuple(COLORS)) -> tuple[str, ...] | None:
    """The candidate answers of a classification task (the `labels` column; `label` with mention=true reads it);
    None for grounding."""
    return {"color": palette, "count": ("1", "2", "3", "4"), "position": ("left", "right", "above", "below")}.get(task)


def palette_of(colors: tuple[str, ...]) -> tuple[str, ...]:
    """data.shape_colors as a palette (empty = all six colours)."""
    return tuple(colors) or tuple(COLORS)


def check_task(task: str, image_size: int, colors: tuple[str, ...] = ()) -> None:
    """A ConfigError naming data.task / data.image_size / data.shape_colors when they cannot make a shapes task."""
    if task not in DRAW:
        raise ConfigError(f"data.task={task!r} is not a shapes task: use one of {', '.join(TASKS)}")
    if image_size < 28:
        raise ConfigError(f"data.image_size={image_size} is too small for the shapes tasks: use 28 or more")
    unknown = [c for c in colors if c not in COLORS]
    if unknown or len(set(colors)) != len(colors):
        raise ConfigError(f"data.shape_colors={list(colors)}: name distinct colours among {', '.join(COLORS)}")
    if len(palette_of(colors)) < MIN_COLORS[task]:
        raise ConfigError(f"data.shape_colors={list(colors)}: the {task} task needs at least {MIN_COLORS[task]} "
                          "colours")


def draw_item(task: str, seed: int, image_size: int, colors: tuple[str, ...] = ()) -> Item:
    """The item drawn from `seed` with the colours of data.shape_colors (deterministic across processes and runs)."""
    return DRAW[task](random.Random(seed), image_size, palette_of(colors))
