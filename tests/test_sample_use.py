"""benchmarks/sample_use.py: informative groups, skipped steps, rounds and tokens of a grid, checked by hand."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import sample_use  # noqa: E402


def _run(root: Path, algorithm: str, seed: int, steps: list[dict], finished: bool = True) -> None:
    run = root / "runs" / algorithm / f"seed{seed}"
    run.mkdir(parents=True)
    run.joinpath("metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps) + '{"final": 1}\n')
    if finished:
        run.joinpath("summary.json").write_text("{}")


def _step(step: int, fraction: float, signal: int, rounds: int, tokens: int) -> dict:
    return {"step": step, "reward_mean": 0.5, "groups": 4, "valid_group_fraction": fraction, "has_signal": signal,
            "rounds": rounds, "generated_tokens": tokens}


def test_pooled_over_seeds_by_hand(tmp_path, capsys):
    # resampling: seed 0 trains on 4 and 3 informative groups (3 and 1 rounds), seed 1 on 2 and 0 (a skipped step)
    _run(tmp_path, "gpg", 0, [_step(1, 1.0, 1, 3, 300), _step(2, 0.75, 1, 1, 100)])
    _run(tmp_path, "gpg", 1, [_step(1, 0.5, 1, 2, 200), _step(2, 0.0, 0, 2, 200)])
    _run(tmp_path, "grpo", 0, [_step(1, 0.25, 1, 1, 90), _step(2, 0.0, 0, 1, 110)])
    _run(tmp_path, "grpo", 1, [_step(1, 1.0, 1, 1, 100)], finished=False)  # unfinished: not counted
    _run(tmp_path, "trl-grpo", 0, [{"step": 1, "reward_mean": 0.5, "generated_tokens": 100}])
    out_json = tmp_path / "use.json"
    sample_use.main([str(tmp_path), "--json", str(out_json)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    # grpo: (1 + 0) / 2 groups per step, 1 of 2 skipped, 1 round, 200 tokens; gpg: (4 + 3 + 2 + 0) / 4 = 2.25,
    # 1 of 4 skipped, 8 / 4 = 2 rounds per step, (400 + 400) / 2 tokens per run; sorted by groups per step
    assert lines[2:] == ["| grpo | 1 | 0.50 | 1 of 2 | 1.00 | 200 |", "| gpg | 2 | 2.25 | 1 of 4 | 2.00 | 400 |"]
    assert "skipped" in captured.err and "trl-grpo" in captured.err
    assert json.loads(out_json.read_text())["gpg"]["informative_groups_per_step"] == pytest.approx(2.25)


def test_a_folder_without_runs_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sample_use.main([str(tmp_path)])
    assert "no runs/ folder" in capsys.readouterr().err
