"""The text side of `sensorium train clip`: a byte-level BPE tokenizer learned from the training captions (or plain
bytes, or a given tokenizer.json), with the special tokens open_clip's `eos` pooling expects (<pad> 0, <start> 1,
<end> 2), lower-casing and whitespace clean-up in its normalizer, so the same tokenizer.json tokenizes alike in
training, in `sensorium.load` and, through `transformers`, in open_clip (`hf_tokenizer_name`). `CaptionTokens`
tokenizes batches in DataLoader workers."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from sensorium.data.formats import iter_source, open_source
from sensorium.interop.preprocess import TextTokenizer

PAD, START, END = "<pad>", "<start>", "<end>"
SPECIALS = (PAD, START, END)  # ids 0, 1, 2: open_clip's text_cfg defaults pad_id=0, eos_id=2
KINDS = ("bpe", "bytes", "file")


def _byte_level(vocab: dict[str, int] | None = None) -> Any:
    """An untrained byte-level BPE with the caption normalizer, pre-tokenizer and decoder."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]) if vocab is not None else models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Strip(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _finish(tok: Any) -> Any:
    """Every text becomes <start> ... <end> (truncation keeps both)."""
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    if [ids[t] for t in SPECIALS] != [0, 1, 2]:
        raise RuntimeError(f"special token ids {ids}; expected 0, 1, 2")
    tok.post_processor = processors.TemplateProcessing(single=f"{START} $A {END}", special_tokens=[(START, 1), (END, 2)])
    return tok


def train_caption_bpe(captions: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` of at most `vocab_size` ids learned from `captions` (any text stays
    encodable: the 256 bytes are in the vocabulary)."""
    if vocab_size < 256 + len(SPECIALS):
        raise ValueError(f"tokenizer.vocab_size={vocab_size}: a byte-level BPE needs at least {256 + len(SPECIALS)}")
    tok = _byte_level()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(captions, trainer)
    return _finish(tok)


def byte_tokenizer() -> Any:
    """One token per UTF-8 byte (259 ids with the specials): no training, long sequences."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = _byte_level({**{t: i for i, t in enumerate(SPECIALS)}, **{c: i + 3 for i, c in enumerate(alphabet)}})
    tok.add_special_tokens(list(SPECIALS))
    return _finish(tok)


def read_captions(shards: Any, limit: int) -> list[str]:
    """The first `limit` captions of the shards, in shard order (images are not decoded)."""
    texts = (s["text"] for s in iter_source(open_source(shards), want=["text"]) if isinstance(s.get("text"), str))
    return list(itertools.islice(texts, limit))


def file_tokenizer(path: str | Path) -> Any:
    """A tokenizer.json (or a folder holding one) whose <pad>/<start>/<end>... see `check_tokenizer`."""
    path = Path(path)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer.path={str(path)!r}: no tokenizer.json there")
    return Tokenizer.from_file(str(path))


def special_ids(tok: Any) -> tuple[int, int]:
    """(pad id, end id) of a caption tokenizer: <pad> and <end>, else CLIP's <|endoftext|> (which CLIP also pads
    with); an error naming what is missing, or when encoding does not end with the end token."""
    pad, end = tok.token_to_id(PAD), tok.token_to_id(END)
    if pad is None or end is None:
        end = tok.token_to_id("<|endoftext|>")
        pad = 0 if end is not None else None
    if pad is None or end is None:
        raise ValueError("the tokenizer has neither <pad>/<end> nor <|endoftext|> special tokens; the text tower "
                         "pools at the end token")
    ids = tok.encode("a photo").ids
    if not ids or ids[-1] != end:
        raise ValueError(f"the tokenizer does not end a text with its end token {tok.id_to_token(end)!r} (it gave "
                         f"{ids}); add a post-processor that appends it")
    return pad, end


def text_tokenizer(tok: Any, context_length: int) -> TextTokenizer:
    """The inference-side tokenizer (interop.preprocess.TextTokenizer): padded to the context, saved with the
    special tokens `transformers` needs to load it (AutoTokenizer, open_clip's HFTokenizer)."""
    pad, end = special_ids(tok)
    special = {"pad_token": tok.id_to_token(pad), "eos_token": tok.id_to_token(end)}
    if tok.token_to_id(START) is not None:
        special["bos_token"] = START
    return TextTokenizer(tok, context_length, pad_id=pad, pad_to_max=True, special=special)


class CaptionTokens:
    """Captions -> ids [B, context] like `text_tokenizer(...)` (truncated, padded with the pad id), as a picklable
    callable for DataLoader workers (the tokenizer travels as its JSON)."""

    def __init__(self, tok: Any, context_length: int):
        self.json, self.context = tok.to_str(), context_length
        self.pad, _ = special_ids(tok)
        self._tok: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tok": None}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self._tok is None:
            self._tok = Tokenizer.from_str(self.json)
            self._tok.enable_truncation(self.context)
            self._tok.enable_padding(length=self.context, pad_id=self.pad, pad_token=self._tok.id_to_token(self.pad))
        return torch.from_numpy(np.asarray([e.ids for e in self._tok.encode_batch(list(texts))], dtype=np.int64))
