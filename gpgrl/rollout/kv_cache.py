"""The shared-prefill sampler's KV cache: a prompt's cache copied to its n completions into preallocated room.

HF's `DynamicLayer` grows by `torch.cat` at every decode step, copying the whole cache of every layer each time
(~12 % of a SmolLM2 decode step at 48 rows, profiled in docs/performance.md). `expand_cache` instead writes each
prompt's keys and values once into a buffer with room for the completion tokens, and `ReservedLayer.update` writes
each new token in place and returns views of the filled part: the attention sees exactly the tensors a grown
cache would hold. Layers of other kinds (sliding-window, linear-attention, quantized caches) are repeated the usual
way and keep their own update.
"""

from __future__ import annotations

from torch import Tensor
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views into buffers with room for `reserve` more tokens.

    Selecting rows keeps the room. Any operation that replaces `keys`/`values` (crop, reorder, repeat, offload,
    reset) leaves the layer growing by concatenation from then on: `update` writes in place only while `keys` is
    still its own view.
    """

    def __init__(self, keys: Tensor, values: Tensor, reserve: int) -> None:
        super().__init__()
        self._length = keys.shape[-2]
        self._keys: Tensor | None = _room(keys, reserve)
        self._values: Tensor | None = _room(values, reserve)
        self.device, self.is_initialized = keys.device, True
        self._publish()

    def _publish(self) -> None:
        self.keys = self._keys[..., : self._length, :]  # [N, H, L, D] view of the filled part
        self.values = self._values[..., : self._length, :]
        self._published = self.keys

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        end = self._length + key_states.shape[-2]
        if self._keys is None or self.keys is not self._published or end > self._keys.shape[-2]:
            self._keys = self._values = None  # out of room, or replaced: grow like a DynamicLayer from now on
            return super().update(key_states, value_states, *args, **kwargs)
        self._keys[..., self._length : end, :].copy_(key_states)
        self._values[..., self._length : end, :].copy_(value_states)
        self._length = end
        self._publish()
        return self.keys, self.values

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep the rows `indices` (the sampler drops finished completions), with their room."""
        if self._keys is None or self.keys is not self._published:
            super().batch_select_indices(indices)
            return
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._publish()


def _room(states: Tensor, reserve: int) -> Tensor:
    """`states` [N, H, L, D] copied into a buffer [N, H, L + reserve, D]."""
    n, heads, length, dim = states.shape
    buffer = states.new_empty(n, heads, length + reserve, dim)
    buffer[..., :length, :].copy_(states)
    return buffer


def expand_cache(cache, n: int, reserve: int) -> None:
    """Repeat every row of `cache` n times (row p -> rows p*n .. p*n+n-1, as `generate` orders them), giving plain
    dynamic layers room for `reserve` more tokens."""
    if not hasattr(cache, "layers"):  # a cache without per-layer objects
        cache.batch_repeat_interleave(n)
        return
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            keys, values = (s.repeat_interleave(n, dim=0) for s in (layer.keys, layer.values))
            cache.layers[i] = ReservedLayer(keys, values, reserve)
        else:
            layer.batch_repeat_interleave(n)
