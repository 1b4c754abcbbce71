"""The images of a dataset row: what an image column may hold, checking every image once, and blank controls.

An image column (`data.image_column`) holds one image or a list of them, each as a path (relative to the data
file's folder, or absolute), encoded bytes, a PIL image, or a `datasets` Image feature (decoded: a PIL image; not
decoded: a dict with `bytes` and/or `path`). `read_images` turns such a value into `ImageRef`s and checks that
every image decodes, so that a missing or unreadable image stops the run before training starts, naming the row
and the file. An `ImageRef` loads lazily (an RGB PIL image) and knows a digest of its content, which keeps
held-out items from sharing an image with training.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpgrl.config import ConfigError

BLANK_RGB = (255, 255, 255)
"""The colour of a blank control image (eval.blank_control): a white image of the original's size."""


@dataclass(frozen=True)
class ImageRef:
    """One image of a row: a file, encoded bytes, or a PIL image held in memory; `where` describes it."""

    where: str
    path: str = ""
    data: bytes = field(default=b"", repr=False)
    image: Any = field(default=None, repr=False, compare=False)
    digest: str = ""

    def load(self) -> Any:
        """The image as an RGB PIL image."""
        from PIL import Image

        if self.image is not None:
            return self.image.convert("RGB")
        with Image.open(self.path or io.BytesIO(self.data)) as img:
            return img.convert("RGB")

    def blank(self) -> ImageRef:
        """A white image of the same size (the blank-image control of eval.blank_control)."""
        from PIL import Image

        size = self.load().size
        return in_memory(Image.new("RGB", size, BLANK_RGB), f"blank {size[0]}x{size[1]} for {self.where}")


def in_memory(image: Any, where: str) -> ImageRef:
    """An ImageRef of a PIL image; its digest is over mode, size and pixels."""
    digest = hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
    return ImageRef(where, image=image, digest=digest)


def _check_decodes(ref: ImageRef) -> None:
    from PIL import Image

    with Image.open(ref.path or io.BytesIO(ref.data)) as img:
        img.verify()  # integrity check without decoding every pixel


def _reference(value: Any, base: Path) -> ImageRef:
    """One image value as an ImageRef (not yet checked)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return in_memory(value, "a PIL image")
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return _reference(value["bytes"] if value.get("bytes") else value["path"], base)
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        return ImageRef(f"{len(data)} bytes", data=data, digest=hashlib.sha256(data).hexdigest())
    if isinstance(value, str) and value.strip():
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise FileNotFoundError(f"no such file {str(path)!r}")
        return ImageRef(f"file {str(path)!r}", path=str(path), digest=hashlib.sha256(path.read_bytes()).hexdigest())
    raise TypeError(f"{type(value).__name__} {value!r:.60}: expected a path, bytes, a PIL image or a datasets Image")


def read_images(value: Any, where: str, column: str, base: Path) -> tuple[ImageRef, ...]:
    """The images in a row's image column (None: no image), each checked to decode; a ConfigError names the row,
    the column and the file otherwise."""
    if value is None:
        return ()
    values: Sequence[Any] = value if isinstance(value, (list, tuple)) else [value]
    refs = []
    for i, item in enumerate(values):
        try:
            ref = _reference(item, base)
            if ref.image is None:
                _check_decodes(ref)
        except Exception as err:
            raise ConfigError(f"{where}: image {i} in column {column!r} cannot be read ({err}); fix the file or the "
                              f"row (relative paths start at the data file's folder {str(base)!r}), or set "
                              "data.image_column") from err
        refs.append(ref)
    return tuple(refs)
