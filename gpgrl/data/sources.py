"""Dataset sources: the rows of a local file, a Hugging Face dataset split or the bundled CHAMP set.

Owns `read_table(cfg, split, key)`, which returns a `Table` of `Row`s: each row's values plus where it came from
("data/train.jsonl line 7", "dataset 'openai/gsm8k' (subset 'main') split 'test' row 3"), so every later error
can name the file and the row. Files are read here rather than through `datasets` so that an unreadable row is
reported with its line number: JSONL (one object per line), JSON (a list of objects), CSV (a header line) and
parquet. Row and line numbers count from 1. Turning rows into prompts is `gpgrl.data`'s job.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpgrl.config import ConfigError, DataConfig


@dataclass(frozen=True)
class Row:
    """One record: column name -> value, and its location for error messages."""

    values: dict[str, Any]
    where: str


@dataclass(frozen=True)
class Table:
    """The rows of one split; `name` says where they come from. Every row has the same columns (a JSONL
    row without some column gets None there)."""

    name: str
    rows: list[Row]
    base: str = ""
    """The folder relative image paths start at (a data file's folder, a local dataset directory); '' = cwd."""


def _uniform(name: str, rows: list[Row], base: str = "") -> Table:
    """Give every row every column (missing ones None), in order of first appearance."""
    columns = list(dict.fromkeys(k for row in rows for k in row.values))
    return Table(name, [Row({k: row.values.get(k) for k in columns}, row.where) for row in rows], base)


# ---------------------------------------------------------------- local files


def _read_jsonl(path: Path, limit: int) -> list[Row]:
    rows: list[Row] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if limit and len(rows) == limit:
                break
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as err:
                raise ConfigError(f"data.path={str(path)!r} line {lineno} is not valid JSON ({err}): fix or remove "
                                  "that line (JSONL holds one JSON object per line)") from err
            rows.append(_object_row(value, path, f"line {lineno}"))
    return rows


def _read_json(path: Path, limit: int) -> list[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ConfigError(f"data.path={str(path)!r} is not valid JSON ({err}); for one object per line, "
                          "name the file .jsonl") from err
    if not isinstance(data, list):
        raise ConfigError(f"data.path={str(path)!r} holds a JSON {type(data).__name__}: expected a list of "
                          "objects (one per row)")
    return [_object_row(value, path, f"row {i}") for i, value in enumerate(data[:limit] if limit else data, 1)]


def _object_row(value: Any, path: Path, where: str) -> Row:
    """A JSON value that must be an object (a row with named columns); `where` is 'line 7' or 'row 7'."""
    if not isinstance(value, dict):
        raise ConfigError(f"data.path={str(path)!r} {where} is a JSON {type(value).__name__}, not an object with "
                          "named columns")
    return Row(value, f"{path} {where}")


def _read_csv(path: Path, limit: int) -> list[Row]:
    rows: list[Row] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            for record in reader:
                if limit and len(rows) == limit:
                    break
                where = f"{path} line {reader.line_num}"
                if None in record or None in record.values():
                    raise ConfigError(f"data.path={str(path)!r} line {reader.line_num} has a different number of "
                                      f"fields than the header ({len(reader.fieldnames or [])}): fix that line")
                rows.append(Row(dict(record), where))
        except csv.Error as err:
            raise ConfigError(f"data.path={str(path)!r} line {reader.line_num} is not valid CSV: {err}") from err
    return rows


def _read_parquet(path: Path, limit: int) -> list[Row]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as err:
        raise ConfigError(f"data.path={str(path)!r} is not a readable parquet file: {err}") from err
    if limit:
        table = table.slice(0, limit)
    return [Row(values, f"{path} row {i}") for i, values in enumerate(table.to_pylist(), 1)]


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def _read_file(cfg: DataConfig) -> Table:
    path = Path(cfg.path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"data.path={cfg.path!r}: unknown file type {path.suffix!r}; use one of "
                          f"{', '.join(_READERS)}, or data.source=hf for a Hugging Face dataset")
    if not path.is_file():
        raise ConfigError(f"data.path={cfg.path!r} does not exist (relative paths start at {Path.cwd()})")
    try:
        rows = reader(path, cfg.max_rows)
    except UnicodeDecodeError as err:
        raise ConfigError(f"data.path={cfg.path!r} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    return _uniform(f"data.path={cfg.path!r}", rows, str(path.resolve().parent))


# ---------------------------------------------------------------- Hugging Face datasets


def _read_hf(cfg: DataConfig, split: str, key: str) -> Table:
    import datasets

    subset = f" (subset {cfg.subset!r})" if cfg.subset else ""
    name = f"dataset {cfg.path!r}{subset} split {split!r}"
    try:
        dataset = datasets.load_dataset(cfg.path, cfg.subset or None, split=split)
    except Exception as err:  # hub, network and format errors all arrive as different types
        raise ConfigError(f"data.path={cfg.path!r}: datasets.load_dataset could not load {name} "
                          f"({type(err).__name__}: {err}). Check data.path, data.subset and {key}; offline, give a "
                          "local file (.jsonl, .json, .parquet, .csv) or a local dataset directory") from err
    if cfg.max_rows:
        dataset = dataset.select(range(min(cfg.max_rows, len(dataset))))
    base = cfg.path if Path(cfg.path).is_dir() else ""
    return _uniform(name, [Row(dict(values), f"{name} row {i}") for i, values in enumerate(dataset, 1)], base)


# ---------------------------------------------------------------- CHAMP (champ-dataset, MIT)

_CHAMP_SUFFIXES = (re.compile(r"\s*\((?:i\.e\.|or approximately)[^)]*\)\s*$"),
                   re.compile(r",\s*or approximately .*$"),
                   re.compile(r"\s+is the only possible value$"),
                   re.compile(r"(?<=\d) values?$"))


def champ_answer(text: str) -> str:
    """A CHAMP gold answer reduced to the part math-verify can compare: the last of 'A, or equivalently B', and
    no explanatory suffix ('900 (i.e., all values)', '0 is the only possible value', '98 values').

    >>> champ_answer("C(10, 5), or equivalently 252"), champ_answer("5/14, or approximately 35.7%")
    ('252', '5/14')
    >>> champ_answer("900 (i.e., all values)"), champ_answer("0 is the only possible value"), champ_answer("No")
    ('900', '0', 'No')
    """
    text = text.split(", or equivalently ")[-1]
    for suffix in _CHAMP_SUFFIXES:
        text = suffix.sub("", text)
    return text.strip()


def _read_champ(cfg: DataConfig) -> Table:
    from importlib import resources

    try:
        path = resources.files("champ_dataset") / "dataset_files" / "v0.json"
        problems = json.loads(path.read_text(encoding="utf-8"))["problems"]
    except ModuleNotFoundError as err:
        raise ConfigError("data.source=champ needs the champ-dataset package: pip install champ-dataset") from err
    rows = [Row({"question": p["_text"], "answer": champ_answer(p["_answer"]), "raw_answer": p["_answer"],
                 "category": p["category"], "identifier": ident}, f"champ-dataset v0.json problem {ident}")
            for ident, p in problems.items()]
    return Table("champ-dataset v0.json", rows[:cfg.max_rows] if cfg.max_rows else rows)


def read_table(cfg: DataConfig, split: str, key: str) -> Table:
    """The rows of `split` (a split name; 'train' for a file or CHAMP) of the configured dataset source.

    `key` names the config key that chose the split (data.split or data.eval_split) for error messages.
    Raises ConfigError naming the file and row for unreadable data and when the split has no rows.
    """
    source = cfg.resolved_source()
    table = {"file": _read_file, "champ": _read_champ}[source](cfg) if source != "hf" else _read_hf(cfg, split, key)
    if not table.rows:
        raise ConfigError(f"{table.name} has no rows ({key}={split!r}): give data with at least one row")
    return table
