"""What a model is asked. Multiple choice follows MMBench (hint, question, lettered options, "Answer with the
option's letter from the given choices directly."), as LLaVA and lmms-eval ask it; yes/no questions are asked as
written (MME's carry their own "Please answer yes or no."); open questions as written plus an optional
post-prompt; captioning with the task's request. Media go first, as OpenAI-style content parts."""

from __future__ import annotations

from typing import Any, Mapping

from sensorium.eval.bench.items import Item

MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
CAPTION_PROMPT = "Describe the picture."
CLASSIFY_PROMPT = "What is in the picture?"


def question_text(item: Item) -> str:
    """Hint and question, one per line (the hint is left out when absent)."""
    return "\n".join(part for part in (item.hint, item.question) if part)


def mcq_prompt(item: Item, options: Mapping[str, str], instruction: str = MCQ_INSTRUCTION) -> str:
    """MMBench's prompt: hint, question, `A. text` per option, then the instruction."""
    lines = [question_text(item), *(f"{k}. {v}" for k, v in options.items())]
    return "\n".join([*lines, instruction] if instruction else lines)


def prompt(kind: str, item: Item, options: Mapping[str, str], meta: Mapping[str, Any]) -> str:
    """The text of the question for generation; `meta` (the task's) may set `instruction` (mcq), `post_prompt`
    (yesno, vqa) and `prompt` (caption)."""
    if kind == "mcq":
        return mcq_prompt(item, options, meta.get("instruction", MCQ_INSTRUCTION))
    if kind == "classification":
        return f"{question_text(item) or CLASSIFY_PROMPT}\nAnswer with one of: {', '.join(options.values())}."
    if kind == "caption":
        return str(meta.get("prompt", CAPTION_PROMPT))
    post = str(meta.get("post_prompt", ""))
    return question_text(item) + (f"\n{post}" if post else "")


def messages(text: str, media: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """One user turn: each media item as a `{"type": modality, modality: value}` part, then a newline and the text
    (the layout the project's decoders are trained on: `<image>\\nquestion`)."""
    parts: list[dict[str, Any]] = [{"type": m, m: v} for m, values in media.items() for v in values]
    parts.append({"type": "text", "text": ("\n" if parts else "") + text})
    return [{"role": "user", "content": parts}]
