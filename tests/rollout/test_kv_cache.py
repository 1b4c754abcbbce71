"""The preallocated KV cache of the shared-prefill sampler holds exactly what HF's growing cache would."""

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from gpgrl.rollout.kv_cache import ReservedLayer, expand_cache


def _cache(layers: int = 2, rows: int = 2, length: int = 3) -> DynamicCache:
    torch.manual_seed(0)
    cache = DynamicCache()
    for i in range(layers):
        cache.update(torch.randn(rows, 2, length, 4), torch.randn(rows, 2, length, 4), i)
    return cache


def _grow_both(reserved, grown, steps: int, width: int = 1) -> None:
    for _ in range(steps):
        k, v = torch.randn(4, 2, width, 4), torch.randn(4, 2, width, 4)
        got, want = reserved.update(k, v), grown.update(k, v)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_expand_cache_orders_rows_as_generate():
    cache, reference = _cache(), _cache()
    expand_cache(cache, 2, reserve=5)
    reference.batch_repeat_interleave(2)
    for mine, theirs in zip(cache.layers, reference.layers, strict=True):
        assert isinstance(mine, ReservedLayer)
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
    assert cache.get_seq_length() == 3


def test_update_in_place_equals_concatenation_and_falls_back_when_out_of_room():
    cache, reference = _cache(), _cache()
    expand_cache(cache, 2, reserve=3)
    reference.batch_repeat_interleave(2)
    mine, theirs = cache.layers[0], reference.layers[0]
    buffer = mine._keys
    _grow_both(mine, theirs, steps=3)
    assert mine.keys.data_ptr() == buffer.data_ptr()  # written in place: still a view of the buffer
    _grow_both(mine, theirs, steps=2)  # past the reserve: grows like a DynamicLayer
    _grow_both(mine, theirs, steps=1, width=2)
    assert mine.get_seq_length() == theirs.get_seq_length() == 10


def test_a_replaced_cache_is_never_written_into_stale_room():
    cache, reference = _cache(), _cache()
    expand_cache(cache, 2, reserve=8)
    reference.batch_repeat_interleave(2)
    mine, theirs = cache.layers[0], reference.layers[0]
    _grow_both(mine, theirs, steps=2)
    mine.crop(-1), theirs.crop(-1)
    _grow_both(mine, theirs, steps=2)
    mine.reset(), theirs.reset()
    k = torch.randn(4, 2, 1, 4)
    assert torch.equal(mine.update(k, k)[0], theirs.update(k, k)[0])


def test_other_layer_kinds_are_repeated_their_own_way():
    class Other(DynamicLayer):
        pass

    cache = _cache()
    cache.layers[1] = other = Other()
    other.update(torch.ones(2, 2, 3, 4), torch.ones(2, 2, 3, 4))
    expand_cache(cache, 3, reserve=4)
    assert isinstance(cache.layers[0], ReservedLayer) and cache.layers[1] is other
    assert other.keys.shape == (6, 2, 3, 4)


def test_selecting_rows_keeps_the_room():
    cache, reference = _cache(rows=4), _cache(rows=4)
    expand_cache(cache, 1, reserve=6)
    mine, theirs = cache.layers[0], reference.layers[0]
    keep = torch.tensor([0, 2, 3])
    mine.batch_select_indices(keep), theirs.batch_select_indices(keep)
    assert torch.equal(mine.keys, theirs.keys) and mine.keys.data_ptr() == mine._keys.data_ptr()
    for _ in range(3):
        k, v = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
        got, want = mine.update(k, v), theirs.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert mine.keys.data_ptr() == mine._keys.data_ptr()  # still in place
