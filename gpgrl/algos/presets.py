"""Algorithms as named presets of orthogonal choices.

This module owns `Algorithm` (advantage estimator x alpha correction x zero-variance handling x
per-token loss x KL x aggregation), the `ALGORITHMS` registry of presets (GPG and its ablations, GRPO,
Dr.GRPO, DAPO, RLOO, REINFORCE++), `resolve_algorithm` (preset + config overrides) and `presets_table`
(the Markdown table of docs/presets.md). The trainer only calls `Algorithm`'s methods and properties; it
never looks at names, and nothing here branches on a name: every choice is a key into a registry.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from gpgrl.algos.advantages import ADVANTAGES, ZEROES_DEGENERATE
from gpgrl.algos.aggregation import AGGREGATIONS
from gpgrl.algos.alpha import ALPHAS, AlphaResult
from gpgrl.algos.losses import LOSSES, k3_kl, masked_mean
from gpgrl.algos.micro_steps import step_weights


@functools.cache
def _takes(fn: Callable[..., object], parameter: str) -> bool:
    """Whether fn's signature has a parameter of this name."""
    return parameter in inspect.signature(fn).parameters


def _require_choice(attribute: str, value: str, registry: Mapping[str, object]) -> None:
    if value not in registry:
        raise ValueError(f"{attribute}={value!r} is not one of: {', '.join(registry)}")


@dataclass(frozen=True)
class Algorithm:
    """One RL algorithm as a composition of registry keys and scalars (see docs/presets.md)."""

    name: str
    """Preset name."""
    advantage: str
    """Advantage estimator, an `ADVANTAGES` key."""
    advantage_kwargs: Mapping[str, object] = field(hash=False)
    """The estimator's own knobs, e.g. {"f_norm": "none"} (frozen)."""
    alpha: str
    """Gradient correction, an `ALPHAS` key: none | samples (B/(B-M)) | tokens."""
    beta_th: float
    """Resample until the informative-group fraction is at least this (0 = never resample)."""
    drop_degenerate: bool
    """DAPO dynamic sampling: degenerate groups never enter the batch."""
    loss: str
    """Per-token loss, a `LOSSES` key."""
    clip_low: float
    """Lower clip range epsilon_low (losses that take it)."""
    clip_high: float
    """Upper clip range epsilon_high (losses that take it)."""
    kl_coef: float
    """Coefficient of the k3 KL to the frozen reference policy, added per token (0 = no reference model)."""
    aggregation: str
    """Loss aggregation, an `AGGREGATIONS` key."""
    summary: str
    """What the preset is, in one or two sentences."""
    paper: str
    """The paper it follows (arXiv id)."""
    reference: str
    """The code (file, flags) whose behaviour it mirrors."""
    micro_groups: int = 0
    """Normalise per local micro-batch of this many groups, as HF-Trainer reference code does (0 = over the
    whole step; see gpgrl.algos.micro_steps)."""
    alpha_groups: int = 0
    """Groups per α window (one reference micro-step over all ranks), a multiple of micro_groups (0 =
    micro_groups); only with micro_groups > 0."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "advantage_kwargs", MappingProxyType(dict(self.advantage_kwargs)))
        _require_choice("advantage", self.advantage, ADVANTAGES)
        _require_choice("alpha", self.alpha, ALPHAS)
        _require_choice("loss", self.loss, LOSSES)
        _require_choice("aggregation", self.aggregation, AGGREGATIONS)
        _check_advantage_kwargs(self.advantage, self.advantage_kwargs)
        _check_scalars(self)

    def advantages(self, rewards: Tensor, group_ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Advantages [N] for rewards [N], group ids [N] and completion lengths [N] (used if the estimator
        takes them)."""
        estimator = ADVANTAGES[self.advantage]
        extra = {"lengths": lengths} if lengths is not None and _takes(estimator, "lengths") else {}
        return estimator(rewards, group_ids, **self.advantage_kwargs, **extra)  # [N]

    def token_loss(self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                   ref_logp: Tensor | None = None,
                   is_weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-token loss [N, T] (+ kl_coef * k3 KL) and detached stats; "kl" (masked mean) when ref_logp
        is given."""
        loss_fn = LOSSES[self.loss]
        knobs = {k: getattr(self, k) for k in ("clip_low", "clip_high") if _takes(loss_fn, k)}
        loss, stats = loss_fn(logp, old_logp, advantages, is_weights=is_weights, mask=mask, **knobs)  # [N, T]
        if ref_logp is None:
            if self.needs_reference:
                raise ValueError(f"preset {self.name!r} has kl_coef={self.kl_coef}: pass ref_logp")
            return loss, stats  # [N, T]
        kl = k3_kl(logp, ref_logp)  # [N, T]
        stats = {**stats, "kl": masked_mean(kl, mask).detach()}  # {[]}
        if self.kl_coef > 0:
            loss = loss + self.kl_coef * kl  # [N, T]
        return loss, stats  # [N, T]

    def alpha_factor(self, num_samples: int, num_degenerate: int, total_tokens: int,
                     valid_tokens: int) -> AlphaResult:
        """The alpha correction from GLOBAL step counts.

        Estimators that do not zero degenerate groups (REINFORCE++ family) lose no samples, so their alpha
        and has_signal are computed as if M = 0; valid_fraction still reports the true (B - M) / B.
        """
        alpha_fn = ALPHAS[self.alpha]
        result = alpha_fn(num_samples, num_degenerate, total_tokens, valid_tokens)
        if ZEROES_DEGENERATE[self.advantage]:
            return result
        ungated = alpha_fn(num_samples, 0, total_tokens, total_tokens)
        return ungated._replace(valid_fraction=result.valid_fraction)

    def step_weights(self, lengths: Tensor, group_ids: Tensor, degenerate: Tensor,
                     max_len: int) -> tuple[Tensor, AlphaResult]:
        """The step's loss coefficients [N] with α folded in, and its α summary, in this preset's scope of
        normalisation (whole step, or per micro-batch: gpgrl.algos.micro_steps)."""
        return step_weights(self.aggregation, self.alpha_factor, lengths, group_ids, degenerate, max_len,
                            self.micro_groups, self.alpha_groups)  # [N]

    @property
    def needs_reference(self) -> bool:
        """A frozen reference policy is needed (kl_coef > 0)."""
        return self.kl_coef > 0

    @property
    def zero_advantage_is_noop(self) -> bool:
        """A sequence with advantage exactly 0 contributes no gradient (true for pg and clip losses when
        kl_coef == 0), so the trainer may skip its forward/backward."""
        return self.kl_coef == 0


def _check_advantage_kwargs(advantage: str, kwargs: Mapping[str, object]) -> None:
    """Every knob is a keyword of the estimator, and the estimator accepts its value (a dry run)."""
    estimator = ADVANTAGES[advantage]
    for key in kwargs:
        if key == "lengths" or not _takes(estimator, key):
            raise ValueError(f"advantage_kwargs: estimator {advantage!r} takes no knob {key!r}")
    try:
        estimator(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]), **kwargs)  # [2]
    except (ValueError, TypeError) as err:
        raise ValueError(f"advantage_kwargs of estimator {advantage!r}: {err}") from err


def _check_scalars(algo: Algorithm) -> None:
    """Ranges of the numeric fields."""
    if not 0.0 <= algo.beta_th <= 1.0:
        raise ValueError(f"beta_th={algo.beta_th} must lie in [0, 1] (a fraction of informative groups)")
    if not 0.0 <= algo.clip_low < 1.0:
        raise ValueError(f"clip_low={algo.clip_low} must lie in [0, 1) (the ratio floor is 1 - clip_low)")
    if not algo.clip_high >= 0.0:
        raise ValueError(f"clip_high={algo.clip_high} must be >= 0")
    if not (algo.kl_coef >= 0.0 and math.isfinite(algo.kl_coef)):
        raise ValueError(f"kl_coef={algo.kl_coef} must be a finite number >= 0")
    if not isinstance(algo.drop_degenerate, bool):
        raise ValueError(f"drop_degenerate={algo.drop_degenerate!r} must be a bool")
    _check_micro_groups(algo.micro_groups, algo.alpha_groups)


def _check_micro_groups(micro: object, window: object) -> None:
    """micro_groups >= 0; alpha_groups >= 0, only with micro_groups > 0, and a multiple of it."""
    for key, value in (("micro_groups", micro), ("alpha_groups", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key}={value!r} must be an integer >= 0 (a number of groups)")
    if window and not micro:
        raise ValueError(f"alpha_groups={window} needs micro_groups > 0 (α windows are made of micro-batches)")
    if window and window % micro:
        raise ValueError(f"alpha_groups={window} must be a multiple of micro_groups={micro} (a reference "
                         "micro-step is whole local micro-batches on every rank)")


# ---------------------------------------------------------------- resolution and documentation

_PLAIN_OVERRIDES = ("beta_th", "alpha", "aggregation", "kl_coef", "micro_groups", "alpha_groups")
"""Override keys that replace a field of the same name, whatever the preset."""

_KNOB_OVERRIDES = MappingProxyType({
    "f_norm": ("advantage", ADVANTAGES, "estimator", "estimators"),
    "clip_low": ("loss", LOSSES, "loss", "losses"),
    "clip_high": ("loss", LOSSES, "loss", "losses"),
})
"""Override keys that only apply when the preset's component takes them:
key -> (Algorithm field, registry, noun, plural)."""


def _unknown_preset(name: str) -> str:
    close = difflib.get_close_matches(name.lower().replace("_", "-"), list(ALGORITHMS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown algorithm {name!r}; {hint}presets: {', '.join(ALGORITHMS)}"


def _check_knob_applies(key: str, preset: Algorithm) -> None:
    attribute, registry, noun, plural = _KNOB_OVERRIDES[key]
    component = getattr(preset, attribute)
    if not _takes(registry[component], key):
        takers = ", ".join(k for k, fn in registry.items() if _takes(fn, key))
        raise ValueError(f"algorithm.{key} applies only to {plural} that take it ({takers}); "
                         f"preset {preset.name!r} uses {noun} {component!r}")


def resolve_algorithm(name: str, **overrides: object) -> Algorithm:
    """The preset `name` with config overrides applied (None values are ignored).

    Override keys: beta_th, alpha, aggregation, kl_coef, micro_groups, alpha_groups (any preset); f_norm
    (estimators that take it); clip_low, clip_high (losses that take them).

    Raises:
        KeyError: unknown preset (args[0] suggests the closest name and lists the presets).
        ValueError: unknown override key, a knob the preset's component does not take, or a bad value.
    """
    if name not in ALGORITHMS:
        raise KeyError(_unknown_preset(name))
    preset = ALGORITHMS[name]
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(changes) - set(_PLAIN_OVERRIDES) - set(_KNOB_OVERRIDES))
    if unknown:
        raise ValueError(f"unknown algorithm override(s) {unknown}; "
                         f"choices: {', '.join((*_PLAIN_OVERRIDES, *_KNOB_OVERRIDES))}")
    for key in changes.keys() & _KNOB_OVERRIDES.keys():
        _check_knob_applies(key, preset)
    if "f_norm" in changes:
        changes["advantage_kwargs"] = {**preset.advantage_kwargs, "f_norm": changes.pop("f_norm")}
    return dataclasses.replace(preset, **changes)


def _cell_advantage(algo: Algorithm) -> str:
    knobs = ", ".join(f"{k}={v}" for k, v in algo.advantage_kwargs.items())
    return f"`{algo.advantage}({knobs})`" if knobs else f"`{algo.advantage}`"


def _cell_loss(algo: Algorithm) -> str:
    loss_fn = LOSSES[algo.loss]
    knobs = [f"{getattr(algo, k):g}" for k in ("clip_low", "clip_high") if _takes(loss_fn, k)]
    return f"`{algo.loss}` ({', '.join(knobs)})" if knobs else f"`{algo.loss}`"


def _cell_beta(algo: Algorithm) -> str:
    beta = f"{algo.beta_th:g}"
    return f"{beta}, drop degenerate" if algo.drop_degenerate else beta


def _cell_aggregation(algo: Algorithm) -> str:
    if not algo.micro_groups:
        return f"`{algo.aggregation}`"
    window = algo.alpha_groups or algo.micro_groups
    return (f"`{algo.aggregation}` per micro-batch of {algo.micro_groups} group(s), α per {window} groups, "
            "micro-batches averaged")


def _table_row(algo: Algorithm) -> str:
    arxiv = algo.paper.removeprefix("arXiv:")
    cells = (f"`{algo.name}`", f"[{arxiv}](https://arxiv.org/abs/{arxiv})", _cell_advantage(algo),
             f"`{algo.alpha}`", _cell_beta(algo), _cell_loss(algo), f"{algo.kl_coef:g}",
             _cell_aggregation(algo), algo.summary.replace("|", "\\|"))
    return "| " + " | ".join(cells) + " |"


def presets_table() -> str:
    """Markdown table of every preset in `ALGORITHMS` (stable output, in registry order)."""
    header = "| name | paper | advantage | α | β_th | loss (clip low, high) | KL | aggregation | summary |"
    rule = "|---|---|---|---|---|---|---|---|---|"
    return "\n".join([header, rule, *(_table_row(algo) for algo in ALGORITHMS.values())]) + "\n"


# ---------------------------------------------------------------- presets

_GPG_PAPER = "arXiv:2504.02546"
_GPG_CODE = "AMAP-ML/GPG open-r1/src/open_r1/gpg_trainer.py (e096da8)"

ALGORITHMS = MappingProxyType({
    "gpg": Algorithm(
        name="gpg", advantage="gpg", advantage_kwargs={"f_norm": "none"}, alpha="samples", beta_th=0.6,
        drop_degenerate=False, loss="pg", clip_low=0.0, clip_high=0.0, kl_coef=0.0,
        aggregation="group-token-mean",
        summary="GPG final recipe (Table 1, 48.3): -log π·(r - group mean), α = B/(B-M), resample until 60% "
                "of groups are informative; paper Eq. 5 aggregation, for which α is exact.",
        paper=_GPG_PAPER,
        reference=f"{_GPG_CODE} with scale_rewards=false, adjust_gd=true, min_inverse_alpha=0.6; "
                  "aggregation per Eq. 5 instead of the code's local token mean"),
    "gpg-ref": Algorithm(
        name="gpg-ref", advantage="gpg", advantage_kwargs={"f_norm": "none"}, alpha="samples", beta_th=0.5,
        drop_degenerate=False, loss="pg", clip_low=0.0, clip_high=0.0, kl_coef=0.0, aggregation="token-mean",
        summary="GPG as launched by the reference code (README GPG-7B): β_th 0.5 and a batch token mean "
                "(global over the step here; gpg-ref-microbatch divides by each local micro-batch's tokens, as "
                "the reference does).",
        paper=_GPG_PAPER,
        reference="AMAP-ML/GPG open-r1/train.sh: --scale_rewards False --adjust_gd --min_inverse_alpha 0.5; "
                  "gpg_trainer.py compute_loss l.268-318"),
    "gpg-ref-microbatch": Algorithm(
        name="gpg-ref-microbatch", advantage="gpg", advantage_kwargs={"f_norm": "none"}, alpha="samples",
        beta_th=0.5, drop_degenerate=False, loss="pg", clip_low=0.0, clip_high=0.0, kl_coef=0.0,
        aggregation="token-mean", micro_groups=1, alpha_groups=2,
        summary="GPG with the reference code's loss: a token mean over each local micro-batch (1 group: "
                "per_device_train_batch_size = G), times the α of its micro-step (2 groups: 2 ranks), "
                "averaged over micro-batches, so α re-weights micro-batches (direction, not only scale). "
                "Set algorithm.micro_groups / alpha_groups to your launch. β_th applies to the whole step "
                "(the reference resamples per micro-step).",
        paper=_GPG_PAPER,
        reference="AMAP-ML/GPG open-r1 gpg_trainer.py compute_loss l.303-316 (loss / local mask sum / "
                  "inverse_alpha), HF Trainer / gradient_accumulation_steps, DDP mean; train.sh flags"),
    "gpg-alpha": Algorithm(
        name="gpg-alpha", advantage="gpg", advantage_kwargs={"f_norm": "none"}, alpha="samples", beta_th=0.0,
        drop_degenerate=False, loss="pg", clip_low=0.0, clip_high=0.0, kl_coef=0.0,
        aggregation="group-token-mean",
        summary="GPG ablation F_norm=1 with α = B/(B-M), no resampling (Table 1, 47.8).",
        paper=_GPG_PAPER,
        reference=f"{_GPG_CODE} with scale_rewards=false, adjust_gd=true, min_inverse_alpha=0"),
    "gpg-no-alpha": Algorithm(
        name="gpg-no-alpha", advantage="gpg", advantage_kwargs={"f_norm": "none"}, alpha="none", beta_th=0.0,
        drop_degenerate=False, loss="pg", clip_low=0.0, clip_high=0.0, kl_coef=0.0,
        aggregation="group-token-mean",
        summary="GPG ablation F_norm=1, α=1, no resampling (Table 1, 43.9).",
        paper=_GPG_PAPER,
        reference=f"{_GPG_CODE} with scale_rewards=false, adjust_gd=false, min_inverse_alpha=0"),
    "gpg-std": Algorithm(
        name="gpg-std", advantage="gpg", advantage_kwargs={"f_norm": "group_std"}, alpha="none", beta_th=0.0,
        drop_degenerate=False, loss="pg", clip_low=0.0, clip_high=0.0, kl_coef=0.0,
        aggregation="group-token-mean",
        summary="GPG ablation F_norm = group std, α=1, no resampling (Table 1, 45.3).",
        paper=_GPG_PAPER,
        reference=f"{_GPG_CODE} with scale_rewards=true, adjust_gd=false, min_inverse_alpha=0"),
    "gpg-std-alpha": Algorithm(
        name="gpg-std-alpha", advantage="gpg", advantage_kwargs={"f_norm": "group_std"}, alpha="samples",
        beta_th=0.0, drop_degenerate=False, loss="pg", clip_low=0.0, clip_high=0.0, kl_coef=0.0,
        aggregation="group-token-mean",
        summary="GPG ablation F_norm = group std with α = B/(B-M), no resampling (Table 1, 44.1).",
        paper=_GPG_PAPER,
        reference=f"{_GPG_CODE} with scale_rewards=true, adjust_gd=true, min_inverse_alpha=0"),
    "grpo": Algorithm(
        name="grpo", advantage="grpo", advantage_kwargs={}, alpha="none", beta_th=0.0, drop_degenerate=False,
        loss="clip", clip_low=0.2, clip_high=0.2, kl_coef=0.04, aggregation="seq-mean-token-mean",
        summary="GRPO (DeepSeekMath): group-standardised advantage, PPO clip 0.2, k3 KL 0.04 to the initial "
                "policy, per-sequence token mean.",
        paper="arXiv:2402.03300",
        reference="TRL v0.16.0 GRPOTrainer defaults (beta=0.04, epsilon=0.2, num_iterations=1); "
                  "verl adv_estimator=grpo with loss_agg_mode=seq-mean-token-mean"),
    "dr_grpo": Algorithm(
        name="dr_grpo", advantage="dr_grpo", advantage_kwargs={}, alpha="none", beta_th=0.0,
        drop_degenerate=False, loss="clip", clip_low=0.2, clip_high=0.2, kl_coef=0.0,
        aggregation="seq-mean-token-sum-norm",
        summary="Dr.GRPO: no std division and a constant normaliser N·max_new_tokens (no length or "
                "difficulty bias); PPO clip 0.2, no KL.",
        paper="arXiv:2503.20783",
        reference="TRL GRPOConfig(loss_type='dr_grpo', scale_rewards='none', beta=0.0); "
                  "verl loss_agg_mode=seq-mean-token-sum-norm"),
    "dapo": Algorithm(
        name="dapo", advantage="grpo", advantage_kwargs={}, alpha="none", beta_th=1.0, drop_degenerate=True,
        loss="clip", clip_low=0.2, clip_high=0.28, kl_coef=0.0, aggregation="token-mean",
        summary="DAPO: clip-higher (0.2, 0.28), batch token mean, dynamic sampling (degenerate groups are "
                "dropped and prompts resampled until the batch is full); no KL. Overlong shaping is a "
                "reward.",
        paper="arXiv:2503.14476",
        reference="verl recipe/dapo (algorithm.filter_groups.enable=True, clip_ratio_low=0.2, "
                  "clip_ratio_high=0.28, loss_agg_mode=token-mean); TRL loss_type='dapo'"),
    "rloo": Algorithm(
        name="rloo", advantage="rloo", advantage_kwargs={}, alpha="none", beta_th=0.0, drop_degenerate=False,
        loss="pg", clip_low=0.0, clip_high=0.0, kl_coef=0.0, aggregation="token-mean",
        summary="RLOO: leave-one-out baseline G/(G-1)·(r - group mean) with the paper's plain REINFORCE "
                "loss; no KL (the paper puts it in the reward); batch token mean (verl's default).",
        paper="arXiv:2402.14740",
        reference="verl adv_estimator=rloo (core_algos.py:476-525) with loss_agg_mode=token-mean; "
                  "TRL RLOOTrainer"),
    "reinforce_pp": Algorithm(
        name="reinforce_pp", advantage="reinforce_pp", advantage_kwargs={}, alpha="none", beta_th=0.0,
        drop_degenerate=False, loss="clip", clip_low=0.2, clip_high=0.2, kl_coef=0.0,
        aggregation="token-mean",
        summary="REINFORCE++: outcome reward whitened over the batch's tokens (no group baseline), PPO clip "
                "0.2, batch token mean. The paper's KL is a reward term; here kl_coef adds a k3 loss term.",
        paper="arXiv:2501.03262",
        reference="verl adv_estimator=reinforce_plus_plus (core_algos.py:582-618); "
                  "OpenRLHF advantage_estimator=reinforce"),
    "reinforce_pp_baseline": Algorithm(
        name="reinforce_pp_baseline", advantage="reinforce_pp_baseline", advantage_kwargs={}, alpha="none",
        beta_th=0.0, drop_degenerate=False, loss="clip", clip_low=0.2, clip_high=0.2, kl_coef=0.0,
        aggregation="token-mean",
        summary="REINFORCE++-baseline: r - group mean, then whitened over the batch's tokens; PPO clip 0.2, "
                "batch token mean; KL as an optional k3 loss term (kl_coef).",
        paper="arXiv:2501.03262",
        reference="verl adv_estimator=reinforce_plus_plus_baseline (core_algos.py:422-473); "
                  "OpenRLHF advantage_estimator=reinforce_baseline"),
})
"""Preset name -> Algorithm. See docs/presets.md (generated by `presets_table`)."""
