"""Decoding on a tiny random Llama: cached and uncached logits agree (dynamic and static caches, left padding),
greedy matches LlamaLM.generate, beam search finds the best sequence, sampling is seeded, stop strings and
streaming behave."""

from __future__ import annotations

import itertools

import torch
from _vlm import image, model

from sensorium.models.generation import Decoder, GenerationConfig, beam_search, generate_ids
from sensorium.models.llama import LlamaConfig, LlamaLM
from sensorium.nn import KVCache


def _lm(vocab: int = 40, seed: int = 0) -> LlamaLM:
    torch.manual_seed(seed)
    lm = LlamaLM(LlamaConfig(vocab_size=vocab, dim=32, depth=2, n_heads=4, n_kv_heads=2, mlp_hidden=64,
                             max_positions=64, eos_token_ids=[2]))
    for p in lm.parameters():  # sharper logits than the default init, so argmax ties never decide a test
        torch.nn.init.normal_(p, std=0.3)
    return lm.eval()


def _left_padded(vocab: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(3, vocab, (2, 9))
    padding = torch.ones_like(ids, dtype=torch.bool)
    padding[1, :4] = False
    return ids, padding


@torch.no_grad()
def test_kv_cache_logits_equal_uncached():
    lm = _lm()
    ids, padding = _left_padded()
    full = lm(ids, padding=padding)  # no cache: the whole sequence at once
    cache = KVCache()
    steps = [lm(ids[:, :5], padding=padding[:, :5], cache=cache)[:, -1]]
    for t in range(5, 9):
        steps.append(lm(ids[:, t:t + 1], padding=padding[:, :t + 1], cache=cache)[:, -1])
    assert torch.allclose(torch.stack(steps, 1), full[:, 4:], atol=1e-5)
    # the preallocated cache used by generation: prefill 5 tokens, then one token per step
    decoder = Decoder(lm, lm.embed(ids[:, :5]), padding[:, :5], max_new_tokens=4, cuda_graph=False)
    static = [decoder.logits] + [decoder.step(ids[:, t]) for t in range(5, 9)]
    assert torch.allclose(torch.stack(static, 1), full[:, 4:], atol=1e-5)


def test_greedy_matches_llama_generate_and_batching():
    lm = _lm()
    ids, padding = _left_padded()
    ref = lm.generate(ids, max_new_tokens=6, padding=padding, eos_token_ids=[])[:, 9:]
    ours = generate_ids(lm, ids, padding, GenerationConfig(max_new_tokens=6, eos_token_ids=[]))
    assert [g.tokens for g in ours] == ref.tolist()
    alone = generate_ids(lm, ids[1:, 4:], None, GenerationConfig(max_new_tokens=6, eos_token_ids=[]))
    assert alone[0].tokens == ours[1].tokens  # a left-padded row decodes as it would alone


@torch.no_grad()
def test_beam_search_finds_the_most_likely_sequence():
    vocab, new = 6, 3
    lm = _lm(vocab, seed=3)
    ids = torch.tensor([[3, 4, 5, 3]])
    best, best_seq = float("-inf"), None
    for seq in itertools.product(range(vocab), repeat=new):  # exhaustive search over all continuations
        full = torch.cat([ids, torch.tensor([seq])], 1)
        logp = lm(full).log_softmax(-1)[0, 3:-1].gather(1, torch.tensor(seq)[:, None]).sum().item()
        if logp > best:
            best, best_seq = logp, list(seq)
    cfg = GenerationConfig(max_new_tokens=new, num_beams=vocab ** 2, eos_token_ids=[])
    out = beam_search(lm, lm.embed(ids), torch.ones_like(ids, dtype=torch.bool), cfg)
    assert out[0].tokens == best_seq
    greedy = generate_ids(lm, ids, cfg=GenerationConfig(max_new_tokens=new, eos_token_ids=[]))
    one_beam = generate_ids(lm, ids, cfg=GenerationConfig(max_new_tokens=new, num_beams=1, eos_token_ids=[]))
    assert greedy[0].tokens == one_beam[0].tokens
    stopped = generate_ids(lm, ids, cfg=GenerationConfig(max_new_tokens=new, num_beams=2, eos_token_ids=best_seq[:1]))
    assert stopped[0].finish_reason == "eos"


def test_sampling_is_seeded_and_filters():
    lm = _lm()
    ids, padding = _left_padded()
    cfg = GenerationConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7, eos_token_ids=[])
    a, b = generate_ids(lm, ids, padding, cfg), generate_ids(lm, ids, padding, cfg)
    assert [g.tokens for g in a] == [g.tokens for g in b]
    greedy = generate_ids(lm, ids, padding, GenerationConfig(max_new_tokens=8, eos_token_ids=[]))
    for filt in (dict(top_k=1), dict(top_p=1e-6)):
        one = generate_ids(lm, ids, padding, GenerationConfig(max_new_tokens=8, temperature=1.5, seed=1,
                                                              eos_token_ids=[], **filt))
        assert [g.tokens for g in one] == [g.tokens for g in greedy]


def test_context_limit_and_eos():
    lm = _lm()
    ids = torch.randint(3, 40, (1, 60))
    out = generate_ids(lm, ids, cfg=GenerationConfig(max_new_tokens=10, eos_token_ids=[]))
    assert out[0].finish_reason == "context" and len(out[0].tokens) == 5
    first = generate_ids(lm, ids[:, :8], cfg=GenerationConfig(max_new_tokens=3, eos_token_ids=[]))[0].tokens[0]
    ended = generate_ids(lm, ids[:, :8], cfg=GenerationConfig(max_new_tokens=3, eos_token_ids=[first]))[0]
    assert ended.tokens == [] and ended.finish_reason == "eos"


def test_stop_strings_and_streaming_on_the_multimodal_model():
    m = model(seed=2)
    for p in m.lm.parameters():
        torch.nn.init.normal_(p, std=0.2)
    conv = [{"role": "user", "content": "<image>\nDescribe the picture."}]
    cfg = GenerationConfig(max_new_tokens=12, eos_token_ids=[])
    full = m.generate([conv], [{"image": [image()]}], cfg)[0]
    assert full.text and full.finish_reason == "length"
    assert "".join(m.stream(conv, {"image": [image()]}, cfg)) == full.text
    stop = full.text[len(full.text) // 2:][:2]
    cut = m.generate([conv], [{"image": [image()]}], GenerationConfig(12, eos_token_ids=[], stop=[stop]))[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.index(stop)]
    assert "".join(m.stream(conv, {"image": [image()]}, GenerationConfig(12, eos_token_ids=[], stop=[stop]))) == cut.text
    batched = m.generate([conv, conv], [{"image": [image()]}, {"image": [image((0, 0, 250))]}], cfg)
    assert batched[0].text == full.text
