"""Rollout: completion masks at the first EOS, collation, and log-probs consistent with sampling."""

import pytest
import torch

from gpgrl.config import ModelConfig
from gpgrl.models import load_policy
from gpgrl.rollout import (
    Sample,
    SamplingParams,
    collate,
    completion_lengths,
    generate,
    selective_log_softmax,
    token_logprobs,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok = load_policy(ModelConfig(name="tiny-random", cache_dir=str(tmp_path_factory.mktemp("c"))), 0)
    return model, tok


def test_completion_lengths_stop_after_first_eos():
    ids = torch.tensor([[5, 9, 2, 7, 2],  # EOS (9) at index 1 -> length 2, EOS included
                        [5, 6, 7, 8, 3],  # no EOS -> full length 5, truncated
                        [9, 0, 0, 0, 0]])  # EOS first -> length 1
    lengths, truncated = completion_lengths(ids, {9})
    assert lengths.tolist() == [2, 5, 1]
    assert truncated.tolist() == [False, True, False]


def test_collate_pads_left_and_right():
    a = Sample(torch.tensor([1, 2, 3]), torch.tensor([4, 5]), "", False)
    b = Sample(torch.tensor([6]), torch.tensor([7, 8, 9]), "", False)
    mb = collate([a, b], pad_id=0)
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5, 0], [0, 0, 6, 7, 8, 9]]
    assert mb.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]
    assert mb.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]


def test_selective_log_softmax_matches_full():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # [1, 2, 3]
    tokens = torch.tensor([[2, 1]])
    # log softmax([1,2,3])[2] = 3 - log(e + e^2 + e^3) = -0.40760596; uniform over 3: -log 3 = -1.09861229
    out = selective_log_softmax(logits, tokens)
    assert torch.allclose(out, torch.tensor([[-0.40760596, -1.09861229]]), atol=1e-6)


def test_logprobs_do_not_depend_on_padding(tiny):
    model, tok = tiny
    groups = generate(model, tok, ["Calculate 1 + 2.", "What is 12 + 35 ?"], 2, SamplingParams(12, 1.0, 1.0, 8))
    samples = [s for g in groups for s in g]
    model.eval()
    with torch.no_grad():
        together = token_logprobs(model, collate(samples, tok.pad_token_id), 1.0)  # [4, Lc]
        for row, s in enumerate(samples):
            alone = token_logprobs(model, collate([s], tok.pad_token_id), 1.0)  # [1, Lc_s]
            assert torch.allclose(together[row, : s.length], alone[0, : s.length], atol=1e-5)


def test_logprobs_equal_the_sampling_distribution(tiny):
    """The scores generate sampled from (logits / T) give the same log-probs as the training forward."""
    model, tok = tiny
    model.eval()
    enc = tok(["Calculate 3 * 4."], return_tensors="pt")
    torch.manual_seed(0)
    # no min_new_tokens: that processor would mask EOS and change the distribution being compared
    out = model.generate(**enc, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=6,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    completion = out.sequences[0, enc.input_ids.shape[1]:]  # [L]
    scores = torch.stack(out.scores, dim=1)[0]  # [L, V], already divided by T
    expected = torch.log_softmax(scores.float(), -1).gather(-1, completion[:, None]).squeeze(-1)  # [L]
    sample = Sample(enc.input_ids[0], completion, "", False)
    with torch.no_grad():
        got = token_logprobs(model, collate([sample], tok.pad_token_id), 0.7)[0]  # [L]
    assert torch.allclose(got, expected, atol=1e-4)


def test_generate_returns_groups_in_prompt_order(tiny):
    model, tok = tiny
    groups = generate(model, tok, ["a", "b b", "c c c"], 3, SamplingParams(5, 1.0, 1.0, 4))
    assert [len(g) for g in groups] == [3, 3, 3]
    assert [g[0].prompt_ids.tolist() for g in groups] == [tok(p, add_special_tokens=False).input_ids
                                                          for p in ["a", "b b", "c c c"]]
    assert all(1 <= s.length <= 5 for g in groups for s in g)
