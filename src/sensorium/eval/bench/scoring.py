"""How a model sits a test, by what it can do (duck-typed, so this layer never loads a model itself):

- `generate`: anything with `.chat(messages, max_tokens=, temperature=)` (a ChatModel) answers in text;
- `likelihood`: a language decoder whose `.model` is a VisionLanguageModel scores each option's text as the
  answer (sum of its tokens' log-probabilities, its end marker included);
- `similarity`: anything with `.embed(modality, items)` (the composer's aligned space, a unified encoder, a dual
  encoder) compares the question's input (its media, or its text when it has none) with each option's text,
  written through a template ("{question} {option}").

A choice is the best-scoring option; an exact tie between options is worth the expected value of a random pick
among them (1/k when the answer is one of the k), so no random number is ever drawn."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from sensorium.eval.bench.circular import Unit
from sensorium.eval.bench.items import Item
from sensorium.eval.bench.prompts import messages, question_text
from sensorium.eval.retrieval import ranks
from sensorium.models.generation import GenerationConfig
from sensorium.models.template import IGNORE, pad_rows, placeholder

SIMILARITY_TEMPLATES = {"mcq": "{question} {option}", "yesno": "{question} {option}",
                        "classification": "a picture of a {option}."}


def item_media(item: Item) -> dict[str, list[Any]]:
    """The item's media decoded, by modality, in order."""
    out: dict[str, list[Any]] = {}
    for media in item.media:
        out.setdefault(media.modality, []).append(media.value())
    return out


def pick(scores: dict[str, float], answer: str) -> tuple[str | None, float, list[str]]:
    """(the chosen key or None on a tie, expected correctness, the tied best keys)."""
    best = max(scores.values())
    ties = [k for k, s in scores.items() if s == best]
    return (ties[0] if len(ties) == 1 else None), (answer in ties) / len(ties), ties


class Generate:
    """Free-text answers, greedy. A language decoder (`.model` a VisionLanguageModel) answers a batch at once,
    with the conversation its `chat` would build (media placeholders, a newline, the text); anything else with a
    `chat` is asked one question at a time."""

    mode = "generate"

    def __init__(self, model: Any, batch: int = 32):
        if not hasattr(model, "chat"):
            raise ValueError(f"{getattr(model, 'name', type(model).__name__)} cannot generate text (no chat); use "
                             "--scoring similarity for an embedding model")
        self.model, self.batch = model, batch
        vlm = getattr(model, "model", None)
        self.vlm = vlm if hasattr(vlm, "generate") and getattr(vlm, "tokenizer", None) is not None else None

    def reads(self) -> set[str]:
        return set(getattr(self.model, "modalities", []))

    def generate(self, text: str, item: Item, max_tokens: int) -> str:
        return self.generate_batch([text], [item], max_tokens)[0]

    def generate_batch(self, texts: Sequence[str], items: Sequence[Item], max_tokens: int) -> list[str]:
        """One answer per (text, item), in order."""
        media = [item_media(item) for item in items]
        if self.vlm is None:
            return [self.model.chat(messages(t, m), max_tokens=max_tokens, temperature=0.0).text
                    for t, m in zip(texts, media)]
        convs = [[{"role": "user", "content": "".join(placeholder(k) * len(v) for k, v in m.items()) +
                   ("\n" if m else "") + t}] for t, m in zip(texts, media)]
        config = GenerationConfig(max_new_tokens=max_tokens, temperature=0.0)
        return [g.text for g in self.vlm.generate(convs, media, config)]


class Likelihood:
    """Per-option log-likelihood under a language decoder (`ChatModel.model`, a VisionLanguageModel)."""

    mode = "likelihood"

    def __init__(self, model: Any):
        vlm = getattr(model, "model", None)
        if vlm is None or not hasattr(vlm, "splice") or getattr(vlm, "tokenizer", None) is None:
            raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no language decoder to score "
                             "options with (likelihood needs a `sensorium train vlm` model)")
        self.vlm = vlm
        self.cache: dict[tuple[str, str], float] = {}

    def reads(self) -> set[str]:
        return set(self.vlm.towers)

    @torch.inference_mode()
    def option_scores(self, unit: Unit, kind: str = "") -> dict[str, float]:
        item = unit.item
        missing = [t for t in dict.fromkeys(unit.options.values()) if (item.index, t) not in self.cache]
        if missing:
            media = item_media(item)
            head = "".join(placeholder(m) * len(v) for m, v in media.items())
            user = (head + "\n" if head else "") + question_text(item)
            convs = [[{"role": "user", "content": user}, {"role": "assistant", "content": t}] for t in missing]
            for text, score in zip(missing, self._score(convs, [media] * len(convs))):
                self.cache[(item.index, text)] = score
        return {k: self.cache[(item.index, t)] for k, t in unit.options.items()}

    def _score(self, convs: list[list[dict[str, str]]], media: list[dict[str, list[Any]]]) -> list[float]:
        vlm = self.vlm
        encoded = vlm.tokenizer.encode_batch(convs)
        inputs = vlm.media_inputs(encoded, media)
        ids, padding = pad_rows([e.ids for e in encoded], vlm.tokenizer.pad_id)
        labels = pad_rows([e.labels for e in encoded], IGNORE)[0]
        device = vlm.device
        embeds, _, labels = vlm.splice(ids.to(device), padding.to(device), inputs, labels.to(device), align="right")
        # right-aligned rows: causal attention alone keeps real tokens off the trailing padding
        logits = vlm.lm.lm_head(vlm.lm.hidden(embeds=embeds)[:, :-1]).float().log_softmax(-1)
        target = labels[:, 1:]
        keep = target != IGNORE
        logp = logits.gather(-1, target.clamp_min(0)[..., None]).squeeze(-1)
        return (logp * keep).sum(1).tolist()


class Similarity:
    """Cosine similarity in an embedding model's shared space between the question's input and each option."""

    mode = "similarity"

    def __init__(self, model: Any, template: str | None = None):
        if not hasattr(model, "embed"):
            raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no embedding space (no embed); "
                             "use --scoring generate or likelihood for a language decoder")
        self.model, self.template = model, template
        self.cache: dict[tuple[str, str], torch.Tensor] = {}

    def reads(self) -> set[str]:
        return set(getattr(self.model, "modalities", []))

    def _embed(self, modality: str, keys: list[str], values: list[Any]) -> torch.Tensor:
        todo = [(k, v) for k, v in dict(zip(keys, values)).items() if (modality, k) not in self.cache]
        if todo:
            out = self.model.embed(modality, [v for _, v in todo])
            for (k, _), e in zip(todo, out):
                self.cache[(modality, k)] = e
        return torch.stack([self.cache[(modality, k)] for k in keys])

    def prepare(self, items: Sequence[Item], batch: int = 64) -> None:
        """Embed every item's media in batches (each picture once), so scoring only looks them up."""
        todo: dict[tuple[str, str], Any] = {}
        for item in items:
            for m in item.media:
                if (m.modality, m.key()) not in self.cache:
                    todo[(m.modality, m.key())] = m
        by_modality: dict[str, list[Any]] = {}
        for (modality, _), m in todo.items():
            by_modality.setdefault(modality, []).append(m)
        for modality, media in by_modality.items():
            for start in range(0, len(media), batch):
                chunk = media[start:start + batch]
                self._embed(modality, [m.key() for m in chunk], [m.value() for m in chunk])

    def query(self, item: Item) -> torch.Tensor:
        """The item's media embeddings averaged (renormalised), or its question text's when it has no media."""
        if not item.media:
            return self._embed("text", [question_text(item)], [question_text(item)])[0]
        self.prepare([item])
        parts = torch.stack([self.cache[(m.modality, m.key())] for m in item.media])
        return torch.nn.functional.normalize(parts.mean(0), dim=-1)

    def option_scores(self, unit: Unit, kind: str) -> dict[str, float]:
        item = unit.item
        template = self.template or SIMILARITY_TEMPLATES.get(kind, "{question} {option}")
        if not item.media:  # the question itself is the query: compare with the bare options
            template = "{option}"
        texts = [template.format(question=question_text(item), option=t).strip() for t in unit.options.values()]
        sims = self._embed("text", texts, texts) @ self.query(item)
        return {k: float(s) for k, s in zip(unit.options, sims)}

    def retrieval(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """Ranks of each picture's captions among all captions, and of each caption's picture among all pictures."""
        images = torch.stack([self.query(item) for item in items])
        texts = [t for item in items for t in item.references()]
        owners = torch.tensor([i for i, item in enumerate(items) for _ in item.references()])
        captions = self._embed("text", texts, texts)
        pictures = torch.arange(len(items))
        out = []
        for direction, q, g, qg, gg, who in (("image->text", images, captions, pictures, owners, pictures),
                                             ("text->image", captions, images, owners, pictures, owners)):
            for n, (r, owner) in enumerate(zip(ranks(q, g, qg, gg).tolist(), who.tolist())):
                out.append({"id": f"{direction}:{n}", "index": items[owner].index, "direction": direction, "rank": r})
        return out


MODES = {"generate": Generate, "likelihood": Likelihood, "similarity": Similarity}


def default_mode(model: Any) -> str:
    """generate for a model that chats, similarity for one that only embeds."""
    return "generate" if hasattr(model, "chat") else "similarity"
