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
    assert "| gpg-no-alpha > grpo | 43.9 > 43.7 | +0.067 ± 0.153 | 2/3 | mixed |" in out
    # std − no-alpha: +0.1, +0.2, +0.1 → mean 0.1333, stdev 0.0577
    assert "| gpg-std > gpg-no-alpha | 45.3 > 43.9 | +0.133 ± 0.058 | 3/3 | holds on every seed |" in out
    # gpg − grpo: −0.1, −0.2, +0.3 (rounding-safe: 0.6 − 0.3)
    assert "| gpg > grpo |" in out and "| 1/3 | mixed |" in out
    assert "| gpg > dr_grpo | 48.3 > 43.7 | -0.033 ± 0.058 | 0/3 (2 tied) | never holds |" in out
    assert "> gpg-alpha" not in out and "| gpg-alpha >" not in out  # it has no finished run: no row


def test_placeholder_rates(tmp_path):
    run = tmp_path / "runs" / "gpg" / "seed0"
    run.mkdir(parents=True)
    texts = ["1 + 2 = \\boxed{result}.", "\\boxed{3}", "The answer is \\boxed{ANSWER}", "3"]
    (run / "eval_after_completions.jsonl").write_text("".join(json.dumps({"completion": t}) + "\n" for t in texts))
    assert paper_orderings.placeholder_rates(tmp_path) == {"gpg": [0.5]}
