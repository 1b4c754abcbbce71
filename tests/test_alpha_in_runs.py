"""benchmarks/alpha_in_runs.py: what α did inside twin runs, read from their metrics, checked by hand."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import alpha_in_runs  # noqa: E402


def _run(root: Path, algorithm: str, steps: list[dict], accuracy: float) -> None:
    run = root / "runs" / algorithm / "seed0"
    run.mkdir(parents=True)
    run.joinpath("metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps) + '{"final": 1}\n')
    run.joinpath("eval_after.json").write_text(json.dumps({"accuracy": accuracy}))
    run.joinpath("summary.json").write_text("{}")


def test_twin_runs_seed_by_seed(tmp_path, capsys):
    # step 1: α = 4 lifts a 0.5 gradient to 2.0, clipped to 1 (factor 0.5); the twin's 0.5 passes unclipped
    # step 2: no informative group (no update); step 3: α = 2, both clipped, and the sampled rewards now differ
    with_alpha = [{"step": 1, "reward_mean": 0.25, "alpha": 4.0, "has_signal": 1, "grad_norm": 2.0, "clipped": 1,
                   "clip_factor": 0.5},
                  {"step": 2, "reward_mean": 0.0, "alpha": 0.0, "has_signal": 0},
                  {"step": 3, "reward_mean": 0.5, "alpha": 2.0, "has_signal": 1, "grad_norm": 4.0, "clipped": 1,
                   "clip_factor": 0.25}]
    without = [{"step": 1, "reward_mean": 0.25, "alpha": 1.0, "has_signal": 1, "grad_norm": 0.5, "clipped": 0,
                "clip_factor": 1.0},
               {"step": 2, "reward_mean": 0.0, "alpha": 0.0, "has_signal": 0},
               {"step": 3, "reward_mean": 0.75, "alpha": 1.0, "has_signal": 1, "grad_norm": 2.0, "clipped": 1,
                "clip_factor": 0.5}]
    _run(tmp_path, "gpg-alpha", with_alpha, 0.4)
    _run(tmp_path, "gpg-no-alpha", without, 0.3)
    out_json = tmp_path / "alpha.json"
    alpha_in_runs.main(["--alpha", f"{tmp_path}:gpg-alpha", "--no-alpha", f"{tmp_path}:gpg-no-alpha",
                        "--json", str(out_json)])
    row = capsys.readouterr().out.splitlines()[2]
    # α > 1 on steps 1 and 3 (mean 3); clipped 2 / 1; into the optimizer (1 + 1) / 2 and (0.5 + 1) / 2
    assert row == "| 0 | 2 of 3 (3.00) | 2 / 1 | 1.00 / 0.75 | 3 | 0.400 / 0.300 |"
    assert json.loads(out_json.read_text())["0"]["first_differing_step"] == 3
