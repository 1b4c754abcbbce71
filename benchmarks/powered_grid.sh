#!/usr/bin/env bash
# The powered miniature of issue 15 (docs/results.md §3-4), every row, seed by seed, one job at a time:
#
#   bash benchmarks/powered_grid.sh [first_seed] [last_seed]      # default 0 4
#   (after `make install`, and `.venv/bin/pip install -e '.[trl]'` for the TRL row)
#
# Each seed runs, in this order: the paper's Table-1 rows + Dr.GRPO + DAPO (`gpgrl compare`), TRL's GRPOTrainer,
# gpg-std at G = 2 and G = 8 (the paper's Table 11 is F_norm = std, α = 1; G = 4 is the main grid's gpg-std), and
# gpg-ref-microbatch with α = B/(B−M) and with α = 1 (what α does under the reference's per-micro-batch loss).
# Seeds are the outer loop so that an interrupted grid leaves every row with the same number of seeds. Every step is
# resumable: `gpgrl compare` reuses finished runs and resumes a cut one from its last checkpoint, the TRL runner
# reuses seeds with a summary.json. Each task writes its comparison.json / .md / .png under results/compare/;
# the runs' small raw files (metrics, summaries, evaluations) are committed, their models and checkpoints are
# ignored by git (.gitignore). The orderings and intervals:
#
#   .venv/bin/python benchmarks/paper_orderings.py results/compare/powered_arithmetic \
#       --with gpg-std-G2=results/compare/powered_arithmetic_g2:gpg-std \
#       --with gpg-std-G8=results/compare/powered_arithmetic_g8:gpg-std \
#       --with gpg-ref-microbatch=results/compare/powered_arithmetic_microbatch:gpg-ref-microbatch \
#       --with gpg-ref-microbatch-no-alpha=results/compare/powered_arithmetic_microbatch_no_alpha:gpg-ref-microbatch
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:-0}
last=${2:-4}
recipe=recipes/compare/powered_arithmetic.yaml
main=results/compare/powered_arithmetic
gpgrl=.venv/bin/gpgrl
# checked first: the TRL row comes after each seed's own rows, and set -e would stop the grid there
.venv/bin/python -c "import trl" 2>/dev/null || {
  echo "powered_grid.sh: the trl-grpo row needs TRL, a benchmark-only extra: .venv/bin/pip install -e '.[trl]'" >&2
  exit 1
}
# the extra tasks share the main grid's untrained-model evaluation (same model, same held-out split): not redone
extra=(eval.before=false)

for seed in $(seq "$first" "$last"); do
  $gpgrl compare --config $recipe train.output_dir=$main train.seed="$seed" seeds=1 \
    algorithms=grpo,gpg,gpg-alpha,gpg-no-alpha,gpg-std,gpg-std-alpha,dr_grpo,dapo
  # its --seeds N is a count from train.seed on (as compare's seeds=): the seed goes in as train.seed instead
  .venv/bin/python benchmarks/trl_grpo_run.py --compare-dir $main --config $recipe train.seed="$seed"
  $gpgrl compare --config $recipe train.output_dir=$main train.seed="$seed" seeds=1 \
    algorithms=grpo,gpg,gpg-alpha,gpg-no-alpha,gpg-std,gpg-std-alpha,dr_grpo,dapo  # the report, now with the TRL row
  for g in 2 8; do
    $gpgrl compare --config $recipe train.output_dir=${main}_g$g train.seed="$seed" seeds=1 "${extra[@]}" \
      rollout.generations_per_prompt=$g algorithms=gpg-std
  done
  $gpgrl compare --config $recipe train.output_dir=${main}_microbatch train.seed="$seed" seeds=1 "${extra[@]}" \
    algorithms=gpg-ref-microbatch
  $gpgrl compare --config $recipe train.output_dir=${main}_microbatch_no_alpha train.seed="$seed" seeds=1 \
    "${extra[@]}" algorithm.alpha=none algorithms=gpg-ref-microbatch
done
