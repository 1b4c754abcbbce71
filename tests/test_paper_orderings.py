"""benchmarks/paper_orderings.py: paired, per-seed verdicts on the paper's orderings, checked by hand."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import paper_orderings  # noqa: E402


def test_paired_differences_and_verdicts(tmp_path, capsys):
    acc = {"grpo": [0.1, 0.2, 0.3], "gpg-no-alpha": [0.2, 0.1, 0.5], "gpg-std": [0.3, 0.3, 0.6],
           "gpg": [0.0, 0.0, 0.6], "dr_grpo": [0.0, 0.1, 0.6]}
    runs = [{"algorithm": a, "seed": s, "status": "finished", "accuracy_after": v}
            for a, vs in acc.items() for s, v in enumerate(vs)]
    runs.append({"algorithm": "gpg-alpha", "seed": 0, "status": "diverged"})
    (tmp_path / "comparison.json").write_text(json.dumps({"runs": runs}))
    paper_orderings.main([str(tmp_path), "--min-seeds", "3"])
    out = capsys.readouterr().out
    # no-alpha − grpo per seed: +0.1, −0.1, +0.2 → mean 0.0667, stdev 0.1528, holds on 2 of 3
    assert "| gpg-no-alpha > grpo | 43.9 > 43.7 | +0.067 ± 0.153 | 2/3 | mixed | [" in out
    assert out.split("| gpg-no-alpha > grpo |")[1].splitlines()[0].endswith("| seeds | undecided |")
    # std − no-alpha: +0.1, +0.2, +0.1 → mean 0.1333, stdev 0.0577
    # its bootstrap interval: every resample's mean lies in [0.1, 0.2]; all three draws 0.1 has probability 8/27
    # and all three 0.2 has 1/27, both above 2.5 %, so the percentile interval is exactly [0.1, 0.2]
    assert ("| gpg-std > gpg-no-alpha | 45.3 > 43.9 | +0.133 ± 0.058 | 3/3 | holds on every seed | "
            "[+0.100, +0.200] | seeds | holds |") in out
    # gpg − grpo: −0.1, −0.2, +0.3 (rounding-safe: 0.6 − 0.3)
    assert "| gpg > grpo |" in out and "| 1/3 | mixed |" in out
    assert ("| gpg > dr_grpo | 48.3 > 43.7 | -0.033 ± 0.058 | 0/3 (2 tied) | never holds | [-0.100, +0.000] | "
            "seeds | undecided |") in out
    assert "> gpg-alpha" not in out and "| gpg-alpha >" not in out  # it has no finished run: no row
    paper_orderings.main([str(tmp_path)])  # by default a verdict at this power needs 5 seeds
    out = capsys.readouterr().out
    assert ("| gpg-std > gpg-no-alpha | 45.3 > 43.9 | +0.133 ± 0.058 | 3/3 | holds on every seed | "
            "[+0.100, +0.200] | seeds | too few seeds (3 < 5) |") in out


def test_placeholder_rates(tmp_path):
    run = tmp_path / "runs" / "gpg" / "seed0"
    run.mkdir(parents=True)
    texts = ["1 + 2 = \\boxed{result}.", "\\boxed{3}", "The answer is \\boxed{ANSWER}", "3"]
    (run / "eval_after_completions.jsonl").write_text("".join(json.dumps({"completion": t}) + "\n" for t in texts))
    assert paper_orderings.placeholder_rates(tmp_path) == {"gpg": [0.5]}


def test_power_from_paired_differences(tmp_path, capsys):
    # paired std 0.2: detecting 0.1 needs ((1.96 + 0.84) * 0.2 / 0.1)^2 = 31.4 -> 32 seeds, 0.05 needs 126
    assert paper_orderings.seeds_needed(0.2, 0.1) == 32 and paper_orderings.seeds_needed(0.2, 0.05) == 126
    runs = [{"algorithm": a, "seed": s, "status": "finished", "accuracy_after": v}
            for a, vs in {"grpo": [0.0, 0.0], "gpg-no-alpha": [0.1, 0.3]}.items() for s, v in enumerate(vs)]
    (tmp_path / "comparison.json").write_text(json.dumps({"runs": runs}))
    paper_orderings.main([str(tmp_path), "--power"])
    out = capsys.readouterr().out
    # differences 0.1, 0.3: std 0.1414 -> 63 and 16 seeds; 5 seeds detect 2.80 * 0.1414 / sqrt(5) = 0.177
    assert "| gpg-no-alpha > grpo | 0.141 | 63 | 16 | 0.177 |" in out


def _write_compare(directory, accuracies, items=None):
    """A compare directory: comparison.json with accuracy_after per (algorithm, seed) and, when given, each run's
    per-item correctness (list of 0/1 per held-out item) as eval_after_completions.jsonl."""
    runs = [{"algorithm": a, "seed": s, "status": "finished", "accuracy_after": v}
            for a, vs in accuracies.items() for s, v in enumerate(vs)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "comparison.json").write_text(json.dumps({"runs": runs}))
    for (algorithm, seed), correct in (items or {}).items():
        run = directory / "runs" / algorithm / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "eval_after_completions.jsonl").write_text("".join(
            json.dumps({"index": i, "sample": 0, "completion": "", "correct": bool(c)}) + "\n"
            for i, c in enumerate(correct)))


def test_two_level_interval_by_hand():
    # one seed, item differences [1, 0]: a resample's mean is 0, 0.5 or 1 (p = 1/4, 1/2, 1/4) -> [0, 1]
    assert paper_orderings.two_level_ci([[1.0, 0.0]]) == (0.0, 1.0)
    # one item per seed reduces to the seed bootstrap: seeds 0.1 and 0.3 -> means 0.1, 0.2, 0.3 -> [0.1, 0.3]
    low, high = paper_orderings.two_level_ci([[0.1], [0.3]])
    assert abs(low - 0.1) < 1e-12 and abs(high - 0.3) < 1e-12
    # the same paired differences on every item of every seed: no noise, the interval is the point
    assert paper_orderings.two_level_ci([[0.5] * 4] * 3) == (0.5, 0.5)


def test_item_noise_widens_the_interval_beyond_the_seed_bootstrap():
    # every seed: better right on 60 of 300 items where worse is wrong, and worse right on 30 where better is
    # wrong: d = +0.1 on every seed, so seeds alone give [0.1, 0.1]; the items' sampling noise does not vanish
    diffs = [[1.0] * 60 + [-1.0] * 30 + [0.0] * 210] * 5
    assert paper_orderings.bootstrap_ci([0.1] * 5) == (0.1, 0.1)
    low, high = paper_orderings.two_level_ci(diffs)
    # per seed sd of the item mean = sqrt((90/300 − 0.01) / 300) = 0.0311; over 5 seeds 0.0139 -> ±0.027
    assert 0.06 < low < 0.085 and 0.115 < high < 0.14


def test_per_item_files_make_the_interval_two_level(tmp_path, capsys):
    items = {("grpo", 0): [0, 0, 1, 0], ("gpg", 0): [1, 1, 1, 0], ("grpo", 1): [0, 1, 0, 0], ("gpg", 1): [1, 1, 0, 0]}
    _write_compare(tmp_path, {"grpo": [0.25, 0.25], "gpg": [0.75, 0.5]}, items)
    paper_orderings.main([str(tmp_path)])
    row = capsys.readouterr().out.split("| gpg > grpo |")[1].splitlines()[0]
    assert "| +0.375 ± 0.177 | 2/2 | holds on every seed |" in row and "| seeds × 4 items |" in row
    # per seed, the items in index order, better − worse
    assert paper_orderings.paired_items(paper_orderings.load_runs(tmp_path), "gpg", "grpo", [0, 1]) == \
        [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_runs_from_other_directories_join_under_their_labels(tmp_path, capsys):
    _write_compare(tmp_path / "main", {"gpg-std": [0.3, 0.4], "grpo": [0.1, 0.2]})
    _write_compare(tmp_path / "g2", {"gpg-std": [0.2, 0.2]})
    _write_compare(tmp_path / "g8", {"gpg-std": [0.5, 0.3], "other": [0.9, 0.9]})
    paper_orderings.main([str(tmp_path / "main"), "--with", f"gpg-std-G2={tmp_path / 'g2'}:gpg-std",
                          "--with", f"gpg-std-G8={tmp_path / 'g8'}:gpg-std", "--all-pairs"])
    out = capsys.readouterr().out
    assert "| gpg-std > gpg-std-G2 | Table 11, G = 4 > 2: 43.3 > 41.9 | +0.150 ± 0.071 | 2/2 |" in out
    # G8 − G4 per seed: +0.2, −0.1 -> mean 0.05, std 0.212
    assert "| gpg-std-G8 > gpg-std | Table 11, G = 8 > 4: 45.3 > 43.3 | +0.050 ± 0.212 | 1/2 | mixed |" in out
    assert "other" not in out  # only the named algorithm of an extra directory joins
    # --all-pairs: the pairs no paper ordering names, higher mean first (G8 0.40 > G2 0.20 > grpo 0.15)
    assert "| gpg-std-G8 > gpg-std-G2 | – |" in out and "| gpg-std-G2 > grpo | – |" in out
    assert "| gpg-std > grpo |" in out and "| grpo > gpg-std |" not in out


def test_bad_with_argument_says_how_to_write_it():
    import argparse

    import pytest

    with pytest.raises(argparse.ArgumentTypeError, match="LABEL=DIR:ALGORITHM"):
        paper_orderings.Source.parse("results/compare/g2")


def test_per_seed_table(tmp_path, capsys):
    runs = [{"algorithm": "grpo", "seed": 0, "status": "finished", "accuracy_after": 0.2, "generated_tokens": 100},
            {"algorithm": "grpo", "seed": 1, "status": "finished", "accuracy_after": 0.4, "generated_tokens": 300},
            {"algorithm": "gpg", "seed": 0, "status": "finished", "accuracy_after": 0.1, "generated_tokens": 1000},
            {"algorithm": "gpg", "seed": 1, "status": "diverged"}]
    (tmp_path / "comparison.json").write_text(json.dumps({"runs": runs}))
    paper_orderings.main([str(tmp_path), "--per-seed"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| row | seed 0 | seed 1 | mean | seeds | generated tokens per run (mean) |"
    # ranked by the mean, lowest first; the diverged seed is a gap, not a zero
    assert lines[2:] == ["| gpg | 0.100 | — | 0.100 | 1 | 1,000 |", "| grpo | 0.200 | 0.400 | 0.300 | 2 | 200 |"]
