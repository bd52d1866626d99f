"""Chat template, BPE tokenizer and label masking for the language decoder, in one place.

A conversation is a list of `{"role": "system" | "user" | "assistant", "content": str}`; content may hold
modality placeholders (`<image>`, `<audio>`, ...), each standing for one media item that the model expands into
its projected tokens. `ChatTokenizer.encode` renders the conversation with the template, tokenizes the whole
text once (exactly as generation will see it) and labels only the assistant answers plus the stop marker that
ends them. Anything that would make training differ from generation raises `TemplateError` instead of
training silently on a shifted or empty mask (LLaVA's zero-loss footgun): a token that straddles a prompt /
answer boundary, an assistant turn with no labelled token, a generation prompt that is not a token prefix of
the training sequence, an unknown role, a format without exactly one `{content}`."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from sensorium.core.config import from_dict
from sensorium.core.files import read_json
from sensorium.nn.tokenizers import read_tokenizer

IGNORE = -100  # label of positions that carry no loss (prompt, media, padding)
PAD = "<pad>"


class TemplateError(ValueError):
    """The chat template and the tokenizer disagree, so the loss mask would be wrong; the message says where."""


def placeholder(modality: str) -> str:
    """The placeholder text of one media item of `modality` in a prompt: '<image>'."""
    return f"<{modality}>"


@dataclass
class ChatTemplate:
    """How turns are rendered. Each format holds `{content}` once; answers are labelled with the first `stop`
    marker that follows them, so the model learns to end its turn."""

    system: str = ""  # default system prompt ("" = none)
    system_format: str = "<|system|>{content}<|end|>\n"
    user_format: str = "<|user|>{content}<|end|>\n"
    assistant_format: str = "<|assistant|>{content}<|end|>\n"
    stop: list[str] = field(default_factory=lambda: ["<|end|>"])

    def parts(self, role: str) -> tuple[str, str]:
        """(text before, text after) the content of a `role` turn."""
        fmt = {"system": self.system_format, "user": self.user_format, "assistant": self.assistant_format}.get(role)
        if fmt is None:
            raise TemplateError(f"unknown role {role!r}; a turn's role is one of system, user, assistant")
        if fmt.count("{content}") != 1:
            raise TemplateError(f"the {role} format {fmt!r} must contain '{{content}}' exactly once")
        before, after = fmt.split("{content}")
        return before, after

    def markers(self) -> list[str]:
        """The `<|...|>` markers the template uses (made special tokens of a tokenizer trained for it)."""
        text = "".join([self.system_format, self.user_format, self.assistant_format, *self.stop])
        return list(dict.fromkeys(re.findall(r"<\|[^|<>]+\|>", text)))


@dataclass
class Encoded:
    """One tokenized conversation: ids [L], labels [L] (IGNORE where no loss), media modalities in order."""

    ids: list[int]
    labels: list[int]
    media: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def train_tokenizer(texts: Iterable[str], vocab_size: int, template: ChatTemplate,
                    modalities: Sequence[str]) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts`, with pad, the template's markers and one
    placeholder per modality as special tokens (any byte string stays encodable: no unknown token)."""

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = [PAD, *template.markers(), *(placeholder(m) for m in modalities)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def extend_tokenizer(tokenizer: Any, template: ChatTemplate, modalities: Sequence[str]) -> Any:
    """A pretrained tokenizer (e.g. a HF LM's tokenizer.json) with pad, the template's markers and the modality
    placeholders added as special tokens where missing (the decoder's embeddings must grow to match)."""

    wanted = [PAD, *template.markers(), *(placeholder(m) for m in modalities)]
    missing = [t for t in wanted if tokenizer.token_to_id(t) is None]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return tokenizer


class ChatTokenizer:
    """A `tokenizers.Tokenizer` plus a ChatTemplate: conversations -> ids and masked labels; ids -> text."""

    def __init__(self, tokenizer: Any, template: ChatTemplate | None = None):
        self.tokenizer = tokenizer
        self.template = template or ChatTemplate()
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        pad = tokenizer.token_to_id(PAD)
        self.pad_id = 0 if pad is None else pad
        self.stop_ids = [i for i in (tokenizer.token_to_id(s) for s in self.template.stop) if i is not None]
        self._placeholders: dict[str, int] = {}
        self._by_id: dict[int, str] | None = None
        self._checked = False

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def placeholder_id(self, modality: str) -> int:
        """Token id of `<modality>`; an error if the tokenizer has no such special token."""
        if modality not in self._placeholders:
            token = self.tokenizer.token_to_id(placeholder(modality))
            if token is None or self.tokenizer.encode(placeholder(modality), add_special_tokens=False).ids != [token]:
                raise TemplateError(f"the tokenizer has no special token {placeholder(modality)!r}, so {modality} "
                                    "placeholders would be split into text; train the tokenizer with that modality")
            self._placeholders[modality] = token
        return self._placeholders[modality]

    def placeholders(self) -> dict[int, str]:
        """Special-token id -> modality for every `<modality>` special token of the tokenizer."""
        if self._by_id is None:
            self._by_id = {}
            for i, added in self.tokenizer.get_added_tokens_decoder().items():
                m = re.fullmatch(r"<([a-z_]+)>", added.content)
                if m and added.content != PAD:
                    self._by_id[i] = m.group(1)
        return self._by_id

    def render(self, messages: Sequence[dict[str, str]], generation: bool = False) -> tuple[str, list[tuple[int, int]]]:
        """Template text of a conversation and the character spans that carry loss (answers + their stop marker).
        `generation` appends the assistant prefix so the model continues with an answer."""
        t = self.template
        if t.system and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": t.system}, *messages]
        text, spans = [], []
        pos = 0
        for turn in messages:
            if "role" not in turn or "content" not in turn:
                raise TemplateError(f"a turn needs 'role' and 'content', got keys {sorted(turn)}")
            before, after = t.parts(turn["role"])
            content = str(turn["content"])
            if turn["role"] == "assistant":
                stop = next((s for s in t.stop if after.startswith(s)), "")
                start = pos + len(before)
                spans.append((start, start + len(content) + len(stop)))
            piece = before + content + after
            text.append(piece)
            pos += len(piece)
        if generation:
            text.append(t.parts("assistant")[0])
        return "".join(text), spans

    def _labels(self, texts: list[str], spans: list[list[tuple[int, int]]], encodings: list[Any],
                rows: list[list[int]]) -> list[list[int]]:
        """Labels of many conversations at once (numpy over all tokens): a token's id where it lies inside an
        answer span, IGNORE elsewhere; a token straddling a span boundary, or a span without tokens, raises."""
        from itertools import chain

        lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        ids = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lens.sum()))
        flat = chain.from_iterable(chain.from_iterable(e.offsets for e in encodings))
        offsets = np.fromiter(flat, dtype=np.int64, count=2 * len(ids)).reshape(-1, 2)
        base = np.concatenate([[0], np.cumsum([len(t) + 1 for t in texts])[:-1]]).astype(np.int64)
        conv = np.repeat(np.arange(len(texts)), lens)
        starts, ends = offsets[:, 0] + base[conv], offsets[:, 1] + base[conv]
        span_conv = np.asarray([i for i, sp in enumerate(spans) for _ in sp], dtype=np.int64)
        span_starts = np.asarray([a for sp in spans for a, _ in sp], dtype=np.int64) + base[span_conv]
        span_ends = np.asarray([b for sp in spans for _, b in sp], dtype=np.int64) + base[span_conv]
        labels = np.full(len(ids), IGNORE, dtype=np.int64)
        if len(span_starts):
            bounds = np.unique(np.concatenate([span_starts, span_ends]))
            nxt = np.searchsorted(bounds, starts, side="right")
            straddle = (nxt < len(bounds)) & (bounds[np.minimum(nxt, len(bounds) - 1)] < ends)
            if straddle.any():
                k = int(np.argmax(straddle))
                i = int(conv[k])
                raise TemplateError(
                    f"token {self.tokenizer.id_to_token(int(ids[k]))!r} (characters {starts[k] - base[i]}-"
                    f"{ends[k] - base[i]} of {texts[i]!r}) spans a prompt/answer boundary, so generation would see "
                    "different tokens than training; end the assistant prefix with a special token (e.g. "
                    "'<|assistant|>') or move the separator into the content")
            idx = np.searchsorted(span_starts, starts, side="right") - 1
            inside = (idx >= 0) & (ends <= span_ends[np.maximum(idx, 0)]) & (ends > starts)
            labels = np.where(inside, ids, IGNORE)
            counts = np.bincount(idx[inside], minlength=len(span_starts))
            empty = np.nonzero((span_ends > span_starts) & (counts == 0))[0]
            if len(empty):
                i = int(span_conv[empty[0]])
                raise TemplateError(f"an assistant turn of {texts[i]!r} has no labelled token: the loss would be zero")
        return [row.tolist() for row in np.split(labels, np.cumsum(lens)[:-1])]

    def encode(self, messages: Sequence[dict[str, str]], generation: bool = False) -> Encoded:
        """Tokenize one conversation (labels on answers); `generation` ends it with the assistant prefix."""
        return self.encode_batch([messages], generation)[0]

    def encode_batch(self, conversations: Sequence[Sequence[dict[str, str]]],
                     generation: bool = False) -> list[Encoded]:
        """Tokenize many conversations (the tokenizer runs them in parallel); the first is also checked for
        train/generation agreement (see `check`)."""
        rendered = [self.render(c, generation) for c in conversations]
        texts, spans = [text for text, _ in rendered], [sp for _, sp in rendered]
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        names = self.placeholders()
        rows = [e.ids for e in encodings]
        labels = self._labels(texts, spans, encodings, rows) if conversations else []
        out = [Encoded(r, lab, [names[i] for i in r if i in names]) for r, lab in zip(rows, labels)]
        if not self._checked and conversations and not generation:
            self.check(conversations[0])
        return out

    def check(self, messages: Sequence[dict[str, str]]) -> None:
        """For each assistant turn: the generation prompt up to it must tokenize to exactly the training tokens
        before its answer, and the answer must be labelled; raises TemplateError otherwise."""
        self._checked = True
        full = self.encode_batch([messages])[0]
        for k, turn in enumerate(messages):
            if turn.get("role") != "assistant":
                continue
            prompt = self.encode(messages[:k], generation=True).ids
            if full.ids[: len(prompt)] != prompt or full.labels[len(prompt)] == IGNORE:
                raise TemplateError(
                    "the generation prompt does not tokenize like the training sequence before the answer:\n"
                    f"  prompt:   {[self.tokenizer.id_to_token(i) for i in prompt[-6:]]}\n"
                    f"  training: {[self.tokenizer.id_to_token(i) for i in full.ids[max(0, len(prompt) - 6):][:8]]}")

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and template.json into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        (directory / "template.json").write_text(json.dumps(asdict(self.template), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "ChatTokenizer":
        """Read what `save` wrote."""
        directory = Path(directory)
        if not (directory / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{directory}: no tokenizer.json")
        template = from_dict(ChatTemplate, read_json(directory / "template.json"), str(directory / "template.json")) \
            if (directory / "template.json").is_file() else ChatTemplate()
        return cls(read_tokenizer(directory / "tokenizer.json"), template)


def pad_rows(rows: Sequence[Sequence[int]], value: int, align: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> [N, L] tensor padded with `value` on the right or left, and a mask (True = real)."""
    from itertools import chain

    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    length = max(1, int(lens.max())) if len(rows) else 1
    cols = np.arange(length)[None, :]
    mask = cols < lens[:, None] if align == "right" else cols >= (length - lens)[:, None]
    out = np.full((len(rows), length), value, dtype=np.int64)
    out[mask] = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lens.sum()))
    return torch.from_numpy(out), torch.from_numpy(mask)
