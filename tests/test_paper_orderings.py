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
    paper_orderings.main([str(tmp_path)])
    out = capsys.readouterr().out
    # no-alpha − grpo per seed: +0.1, −0.1, +0.2 → mean 0.0667, stdev 0.1528, holds on 2 of 3
    assert "| gpg-no-alpha > grpo | 43.9 > 43.7 | +0.067 ± 0.153 | 2/3 | mixed | [" in out
    assert out.split("| gpg-no-alpha > grpo |")[1].splitlines()[0].endswith("| undecided |")
    # std − no-alpha: +0.1, +0.2, +0.1 → mean 0.1333, stdev 0.0577
    # its bootstrap interval: every resample's mean lies in [0.1, 0.2]; all three draws 0.1 has probability 8/27
    # and all three 0.2 has 1/27, both above 2.5 %, so the percentile interval is exactly [0.1, 0.2]
    assert ("| gpg-std > gpg-no-alpha | 45.3 > 43.9 | +0.133 ± 0.058 | 3/3 | holds on every seed | "
            "[+0.100, +0.200] | holds |") in out
    # gpg − grpo: −0.1, −0.2, +0.3 (rounding-safe: 0.6 − 0.3)
    assert "| gpg > grpo |" in out and "| 1/3 | mixed |" in out
    assert ("| gpg > dr_grpo | 48.3 > 43.7 | -0.033 ± 0.058 | 0/3 (2 tied) | never holds | [-0.100, +0.000] | "
            "undecided |") in out
    assert "> gpg-alpha" not in out and "| gpg-alpha >" not in out  # it has no finished run: no row


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
