"""Decoding for Llama-family decoders from input embeddings (text, or text with spliced media): greedy,
temperature / top-k / top-p sampling and beam search, batched (left-aligned rows), EOS ids and stop strings,
streaming. One preallocated KV cache serves every mode; on CUDA the one-token decode step is captured once as
a CUDA graph and replayed, which removes the per-kernel launch cost that dominates small-batch decoding."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from sensorium.models.llama import LlamaLM, positions_from_padding
from sensorium.nn import attention_mask

log = logging.getLogger(__name__)
GRAPH_FAILURES: list[str] = []  # why CUDA-graph capture fell back to eager decoding (benchmarks report it)


@dataclass
class GenerationConfig:
    """How to decode. temperature 0 = greedy; num_beams > 1 = beam search (deterministic)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0  # beam score = logprob sum / length ** length_penalty
    stop: list[str] = field(default_factory=list)  # stop strings: output is cut before the first one
    eos_token_ids: list[int] | None = None  # None = the decoder's (plus the tokenizer's stop markers)
    seed: int | None = None
    cuda_graph: bool = True  # capture the decode step on CUDA


@dataclass
class Generated:
    """One row's output: new token ids, decoded text (if a tokenizer was given) and why it ended."""

    tokens: list[int]
    text: str = ""
    finish_reason: str = "length"  # eos | stop | length | context


class StaticKVCache:
    """Preallocated keys/values [B, H_kv, max_len, D] per layer; `index` holds the positions being written, so
    Attention's `cache.update` works unchanged and tensor addresses never move (CUDA-graph safe)."""

    def __init__(self, lm: LlamaLM, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        cfg = lm.cfg
        heads, dim = cfg.n_kv_heads or cfg.n_heads, cfg.head_dim or cfg.dim // cfg.n_heads
        shape = (batch, heads, max_len, dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.depth)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.depth)]
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, H_kv, T, D] at positions `index` [T]; return the whole buffers."""
        self.keys[layer].index_copy_(2, self.index, k.to(self.keys[layer].dtype))
        self.values[layer].index_copy_(2, self.index, v.to(self.values[layer].dtype))
        return self.keys[layer], self.values[layer]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (beam search): row i becomes old row rows[i]."""
        for buf in (*self.keys, *self.values):
            buf.copy_(buf.index_select(0, rows))


def _logits(lm: LlamaLM, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
            cache: StaticKVCache) -> torch.Tensor:
    """Last-position logits [B, vocab] for embeddings x [B, T, dim] written into the cache."""
    rope = lm.rope(positions, dtype=x.dtype)
    h = lm.transformer(x, mask=mask, is_causal=False, rope=rope, cache=cache)
    return lm.lm_head(lm.norm(h[:, -1])).float()


class Decoder:
    """Incremental decoding state for a batch: `prefill` the prompt, then `step(tokens)` -> next logits."""

    def __init__(self, lm: LlamaLM, embeds: torch.Tensor, padding: torch.Tensor, max_new_tokens: int,
                 cuda_graph: bool = True):
        batch, length = padding.shape
        self.lm, self.length = lm, length
        self.max_len = min(length + max_new_tokens, lm.cfg.max_positions)
        if length > lm.cfg.max_positions:
            raise ValueError(f"the prompt is {length} tokens, longer than the decoder's context of "
                             f"{lm.cfg.max_positions}")
        device = embeds.device
        self.cache = StaticKVCache(lm, batch, self.max_len, embeds.dtype, device)
        self.valid = torch.zeros(batch, self.max_len, dtype=torch.bool, device=device)
        self.valid[:, :length] = padding.bool()
        self.next_pos = positions_from_padding(padding)[:, -1:] + 1  # RoPE position of the next token [B, 1]
        mask = attention_mask(padding.bool(), length, length, causal=True)
        mask = F.pad(mask, (0, self.max_len - length), value=False)
        self.cache.index = torch.arange(length, device=device)
        self.logits = _logits(lm, embeds, positions_from_padding(padding), mask, self.cache)
        self.cursor = length  # cache slot of the next token
        self.graph: Any = None
        self.tok_buf: torch.Tensor | None = None
        self.use_graph = cuda_graph and device.type == "cuda"

    @property
    def room(self) -> int:
        """How many more tokens fit in the context."""
        return self.max_len - self.cursor

    def _eager(self, tokens: torch.Tensor) -> torch.Tensor:
        return _logits(self.lm, self.lm.embed(tokens), self.pos_buf, self.valid[:, None, None, :], self.cache)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens [B] at the cursor and return the logits [B, vocab] for the position after them."""
        if self.room <= 0:
            raise ValueError(f"the context of {self.max_len} tokens is full")
        self.valid[:, self.cursor] = True
        if self.tok_buf is None:  # first step: static input buffers (and the graph that reads them)
            self.tok_buf, self.pos_buf = tokens[:, None].clone(), self.next_pos.clone()
            self.cache.index = torch.full((1,), self.cursor, dtype=torch.long, device=tokens.device)
            if self.use_graph:
                try:
                    self.graph = self._capture()
                except RuntimeError as exc:  # e.g. an op that syncs with the host: decode eagerly instead
                    GRAPH_FAILURES.append(f"{type(exc).__name__}: {exc}"[:300])
                    log.warning("CUDA graph capture failed (%s); decoding without graphs", exc)
                    self.graph, self.use_graph = None, False
        self.tok_buf.copy_(tokens[:, None])
        self.pos_buf.copy_(self.next_pos)
        self.cache.index.fill_(self.cursor)
        if self.graph is not None:
            self.graph.replay()
            logits = self.graph_out.clone()
        else:
            logits = self._eager(self.tok_buf)
        self.next_pos += 1
        self.cursor += 1
        return logits

    def _capture(self) -> Any:
        """Record one decode step on the static buffers (warm-up on a side stream first, as CUDA requires)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up writes land in the slot the real step overwrites
                self._eager(self.tok_buf)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.graph_out = self._eager(self.tok_buf)
        return graph

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search: keep rows `rows` of every per-row state."""
        self.cache.reorder(rows)
        self.valid.copy_(self.valid.index_select(0, rows))
        self.next_pos.copy_(self.next_pos.index_select(0, rows))


def sample(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens [B] from logits [B, vocab]: argmax at temperature 0, else top-k / top-p filtered sampling."""
    if cfg.temperature <= 0:
        return logits.argmax(-1)
    logits = logits / cfg.temperature
    if cfg.top_k > 0:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= cfg.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.float().cpu(), 1, generator=generator).squeeze(1).to(logits.device)


def _cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    hits = [text.index(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


class _Rows:
    """Per-row bookkeeping shared by sampling and streaming: tokens, done flags, finish reasons, stop strings."""

    def __init__(self, batch: int, eos: list[int], stop: list[str], decode: Callable[[list[int]], str] | None):
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.reason = ["length"] * batch
        self.done = [False] * batch
        self.eos, self.stop, self.decode = set(eos), stop, decode

    def add(self, new: list[int]) -> None:
        for i, t in enumerate(new):
            if self.done[i]:
                continue
            if t in self.eos:
                self.done[i], self.reason[i] = True, "eos"
                continue
            self.tokens[i].append(t)
            if self.stop and self.decode is not None and _cut(self.decode(self.tokens[i]), self.stop)[1]:
                self.done[i], self.reason[i] = True, "stop"

    def results(self) -> list[Generated]:
        out = []
        for toks, reason in zip(self.tokens, self.reason):
            text = _cut(self.decode(toks), self.stop)[0] if self.decode is not None else ""
            out.append(Generated(toks, text, reason))
        return out


def _eos(lm: LlamaLM, cfg: GenerationConfig, extra: Sequence[int]) -> list[int]:
    return list(cfg.eos_token_ids) if cfg.eos_token_ids is not None else [*lm.cfg.eos_token_ids, *extra]


@torch.inference_mode()
def stream_tokens(lm: LlamaLM, embeds: torch.Tensor, padding: torch.Tensor, cfg: GenerationConfig,
                  decode: Callable[[list[int]], str] | None = None, extra_eos: Sequence[int] = ()
                  ) -> Iterator[tuple[list[int], _Rows]]:
    """Sampling/greedy decoding of left-aligned rows; yields (new token per row, state) after every step."""
    if cfg.num_beams > 1:
        raise ValueError("beam search does not stream; use generate()")
    decoder = Decoder(lm, embeds, padding, cfg.max_new_tokens, cfg.cuda_graph)
    generator = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
    rows = _Rows(padding.shape[0], _eos(lm, cfg, extra_eos), cfg.stop, decode)
    logits = decoder.logits
    for step in range(cfg.max_new_tokens):
        token = sample(logits, cfg, generator)
        new = token.tolist()
        rows.add(new)
        yield new, rows
        if all(rows.done):
            return
        if decoder.room <= 0:
            rows.reason = [r if d else "context" for r, d in zip(rows.reason, rows.done)]
            return
        if step + 1 < cfg.max_new_tokens:
            logits = decoder.step(token)


@torch.inference_mode()
def beam_search(lm: LlamaLM, embeds: torch.Tensor, padding: torch.Tensor, cfg: GenerationConfig,
                decode: Callable[[list[int]], str] | None = None, extra_eos: Sequence[int] = ()) -> list[Generated]:
    """Beam search with `cfg.num_beams` beams per row: the hypothesis with the best length-normalised log
    probability among those that ended (EOS or stop string) or, failing that, among the running beams."""
    batch, k = padding.shape[0], cfg.num_beams
    rows = torch.arange(batch, device=embeds.device).repeat_interleave(k)
    decoder = Decoder(lm, embeds[rows], padding[rows], cfg.max_new_tokens, cuda_graph=False)
    eos = set(_eos(lm, cfg, extra_eos))
    scores = torch.full((batch, k), float("-inf"), device=embeds.device)
    scores[:, 0] = 0.0
    seqs: list[list[int]] = [[] for _ in range(batch * k)]
    finished: list[list[tuple[float, list[int], str]]] = [[] for _ in range(batch)]
    closed = [False] * batch
    norm = lambda s, n: s / max(n, 1) ** cfg.length_penalty  # noqa: E731
    logits = decoder.logits
    for step in range(cfg.max_new_tokens):
        logp = logits.log_softmax(-1).view(batch, k, -1) + scores[:, :, None]
        top, idx = logp.view(batch, -1).topk(2 * k, dim=-1)
        vocab = logits.shape[-1]
        keep_rows, keep_tok, new_scores, new_seqs = [], [], [], []
        for b in range(batch):
            chosen = []
            for score, flat in zip(top[b].tolist(), idx[b].tolist()):
                beam, tok = divmod(flat, vocab)
                seq = seqs[b * k + beam]
                stopped = bool(cfg.stop and decode is not None and _cut(decode(seq + [tok]), cfg.stop)[1])
                if tok in eos or stopped:
                    if not closed[b] and len(chosen) < k:
                        finished[b].append((norm(score, len(seq) + 1), seq if tok in eos else seq + [tok],
                                            "eos" if tok in eos else "stop"))
                    continue
                if len(chosen) < k:
                    chosen.append((score, b * k + beam, tok, seq + [tok]))
            while len(chosen) < k:  # a batch row whose candidates all ended keeps dead beams
                chosen.append((float("-inf"), b * k, next(iter(eos), 0), list(seqs[b * k])))
            if len(finished[b]) >= k:
                closed[b] = True
            for score, row, tok, seq in chosen:
                keep_rows.append(row)
                keep_tok.append(tok)
                new_scores.append(score)
                new_seqs.append(seq)
        seqs = new_seqs
        scores = torch.tensor(new_scores, device=embeds.device).view(batch, k)
        if all(closed) or decoder.room <= 0 or step + 1 == cfg.max_new_tokens:
            break
        decoder.reorder(torch.tensor(keep_rows, device=embeds.device))
        logits = decoder.step(torch.tensor(keep_tok, device=embeds.device))
    out = []
    for b in range(batch):
        reason = "context" if decoder.room <= 0 else "length"
        pool = finished[b] or [(norm(scores[b, j].item(), len(seqs[b * k + j])), seqs[b * k + j], reason)
                               for j in range(k)]
        _, toks, why = max(pool, key=lambda item: item[0])
        text = _cut(decode(toks), cfg.stop)[0] if decode is not None else ""
        out.append(Generated(toks, text, why))
    return out


def generate_from_embeds(lm: LlamaLM, embeds: torch.Tensor, padding: torch.Tensor, cfg: GenerationConfig,
                         decode: Callable[[list[int]], str] | None = None,
                         extra_eos: Sequence[int] = ()) -> list[Generated]:
    """Decode every left-aligned row of embeds [B, L, dim] (padding [B, L] True on real positions)."""
    if cfg.num_beams > 1:
        return beam_search(lm, embeds, padding, cfg, decode, extra_eos)
    rows = None
    for _, rows in stream_tokens(lm, embeds, padding, cfg, decode, extra_eos):
        pass
    assert rows is not None
    return rows.results()


def generate_ids(lm: LlamaLM, ids: torch.Tensor, padding: torch.Tensor | None = None,
                 cfg: GenerationConfig | None = None) -> list[Generated]:
    """Token-id prompts [B, L] (left-padded when batched) -> generated tokens per row."""
    padding = torch.ones_like(ids, dtype=torch.bool) if padding is None else padding.bool()
    with torch.inference_mode():
        embeds = lm.embed(ids)
    return generate_from_embeds(lm, embeds, padding, cfg or GenerationConfig())
