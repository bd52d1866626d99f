"""Answer extraction without guessing: a model's free text -> the option it names, or None with the reason.

`choice` follows MMBench's rules in their order (VLMEvalKit's `can_infer_option` / `can_infer_text`): a lone
option letter, then a letter marked as a choice (`(A)`, `A.`, `A:`, ...), then exactly one option's text in the
answer. Where MMBench then asks an LLM judge and finally draws a random letter, an answer here stays unparsed:
it counts as wrong and is counted. `first_char` is SEED-Bench's rule, `yes_no` MME's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

# VLMEvalKit's (prefix, suffix) marks of a choice letter inside whitespace-separated words
MARKS: tuple[tuple[str, str], ...] = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."),
                                      (":", ""), (":", ","), (":", "."), (":", ")"), (":", ")."))
_STRIP = " \t\r\n.()[]:*\"'`"


@dataclass(frozen=True)
class Extraction:
    """What an answer was read as: the option key (None when unparsed), the rule that decided, and why not."""

    choice: str | None
    rule: str  # letter | marked | text | first_char | yes_no | unparsed
    reason: str = ""


def _unparsed(reason: str) -> Extraction:
    return Extraction(None, "unparsed", reason)


def _normal(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+(?:[.'][a-z0-9]+)*", text.lower()))


def option_text(answer: str, options: Mapping[str, str]) -> Extraction:
    """Exactly one option's text found in the answer as whole words (case and punctuation ignored); an option whose
    text lies inside another found option's text does not count twice ('red' inside 'dark red')."""
    said = f" {_normal(answer)} "
    found = [k for k, v in options.items() if _normal(v) and f" {_normal(v)} " in said]
    longest = [k for k in found if not any(k != o and f" {_normal(options[k])} " in f" {_normal(options[o])} "
                                           for o in found)]
    if len(longest) == 1:
        return Extraction(longest[0], "text")
    if longest:
        return _unparsed(f"the answer names several options' text ({', '.join(sorted(longest))})")
    return _unparsed("no option letter and no option's text in the answer")


def choice(answer: str, options: Mapping[str, str]) -> Extraction:
    """MMBench-style extraction of an option letter (keys of `options`, e.g. A..E) from free text; see module doc."""
    text = str(answer or "")
    if not text.strip():
        return _unparsed("empty answer")
    letters = [k for k in options if len(k) == 1 and k.isupper()]
    lone = text.strip(_STRIP)
    if lone.upper() in letters and len(lone) == 1:
        return Extraction(lone.upper(), "letter")
    words = text.split()
    bare = [c for c in letters if c in words]
    # a bare 'A' in a longer answer may be the article ('A red circle'): MMBench does not take it as a choice
    if len(bare) == 1 and not ("A" in words and len(words) > 3):
        return Extraction(bare[0], "marked")
    seen = set(bare)
    for prefix, suffix in MARKS:
        marked = [c for c in letters if prefix + c + suffix in words]
        if len(marked) == 1:
            return Extraction(marked[0], "marked")
        seen.update(marked)
    found = option_text(text, options)
    if found.choice is None and len(seen) > 1:
        return _unparsed(f"several option letters ({', '.join(sorted(seen))}) and no single option's text")
    if found.choice is None and bare == ["A"]:
        return _unparsed("a bare 'A' in a longer answer may be the article (MMBench's rule), and no option's text")
    return found


def first_char(answer: str, options: Mapping[str, str]) -> Extraction:
    """SEED-Bench's rule: the first character of the stripped answer is the choice (case-insensitive)."""
    text = str(answer or "").strip()
    if not text:
        return _unparsed("empty answer")
    head = text[0].upper()
    return Extraction(head, "first_char") if head in options else _unparsed(f"first character {text[0]!r} is no option")


def yes_no(answer: str, options: Mapping[str, str] | None = None) -> Extraction:
    """MME's rule (as in lmms-eval): lower-case, drop '.', 'yes'/'no' (or 'y'/'n') exactly, else 'yes' or 'no' within
    the first four characters (yes first); anything else is unparsed."""
    text = str(answer or "").lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return Extraction(text, "yes_no")
    if len(text) == 1:
        return Extraction({"y": "yes", "n": "no"}[text], "yes_no") if text in "yn" else _unparsed(
            f"{answer!r} is not yes or no")
    head = text[:4]
    if "yes" in head:
        return Extraction("yes", "yes_no")
    if "no" in head:
        return Extraction("no", "yes_no")
    return _unparsed("neither 'yes' nor 'no' in the first four characters" if text else "empty answer")


# name -> extractor(answer, options) -> Extraction
EXTRACTORS: dict[str, Callable[..., Extraction]] = {"mmbench": choice, "first-char": first_char, "yes-no": yes_no,
                                                    "option-text": option_text}


def get_extractor(name: str) -> Callable[..., Extraction]:
    """An extractor by name, with an error listing the known ones."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extraction rule {name!r}; choose from {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name]
