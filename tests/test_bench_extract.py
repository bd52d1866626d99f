"""Answer extraction of the harness: each MMBench rule in order and each refusal (an unparsed answer is wrong
and counted, never a random letter); SEED-Bench's first character; MME's yes/no. Expected values follow the
published rules (ANCHORS.md, lmms-eval's mmbench_evals.py / seedbench / mme utils)."""

from __future__ import annotations

import pytest

from sensorium.eval.bench.extract import choice, first_char, get_extractor, option_text, yes_no

OPTS = {"A": "red circle", "B": "blue square", "C": "green star", "D": "yellow triangle"}


@pytest.mark.parametrize("answer, letter", [("B", "B"), (" (C) ", "C"), ("d.", "D"), ("**A**", "A")])
def test_lone_letter(answer, letter):
    got = choice(answer, OPTS)
    assert (got.choice, got.rule) == (letter, "letter")


@pytest.mark.parametrize("answer, letter", [
    ("The answer is B", "B"),            # one bare option letter among the words
    ("B. blue square", "B"),             # marked 'B.'
    ("I pick C: green star", "C"),       # marked 'C:'
    ("(D) because it has three sides", "D"),
    ("It is D).", "D"),
])
def test_marked_letter(answer, letter):
    got = choice(answer, OPTS)
    assert (got.choice, got.rule) == (letter, "marked")


def test_option_text_when_no_letter():
    assert choice("I see a blue square.", OPTS).choice == "B"
    assert choice("I see a blue square.", OPTS).rule == "text"
    # 'A' as an article in a longer answer is not a choice; the option's text decides
    assert (choice("A red circle is shown here", OPTS).choice, choice("A red circle is shown here", OPTS).rule) == \
        ("A", "text")
    # an option inside another found option does not count twice
    assert option_text("dark red", {"A": "red", "B": "dark red"}).choice == "B"


@pytest.mark.parametrize("answer, reason", [
    ("", "empty answer"),
    ("   ", "empty answer"),
    ("E", "no option letter"),                      # a letter that is not an option
    ("A or B", "several option letters (A, B)"),
    ("(A) or (C)", "several option letters (A, C)"),
    ("red circle and green star", "several options' text (A, C)"),
    ("A cat sits on the mat", "may be the article"),
    ("purple hexagon", "no option letter and no option's text"),
])
def test_refusals_are_unparsed_never_guessed(answer, reason):
    got = choice(answer, OPTS)
    assert got.choice is None and got.rule == "unparsed" and reason in got.reason
    assert choice(answer, OPTS) == got  # deterministic: no random fallback


def test_text_rule_matches_whole_words():
    # lmms-eval's substring test would read 'not sure' as option 'no'; whole words do not
    assert option_text("not sure", {"A": "no", "B": "yes"}).choice is None
    assert option_text("No.", {"A": "no", "B": "yes"}).choice == "A"


def test_seed_first_character():
    assert first_char("B is correct", OPTS).choice == "B"
    assert first_char("b", OPTS).choice == "B"
    assert first_char("The answer is B", OPTS).choice is None  # 'T': wrong under SEED's rule, as published
    assert first_char("", OPTS).choice is None


@pytest.mark.parametrize("answer, label", [
    ("Yes", "yes"), ("No.", "no"), ("yes, it is", "yes"), ("Not really", "no"), ("nope", "no"), ("y", "yes"),
    ("n", "no"), ("Yes and no", "yes"),
])
def test_mme_yes_no(answer, label):
    assert yes_no(answer).choice == label


@pytest.mark.parametrize("answer", ["There is no circle", "x", "", "maybe"])
def test_mme_yes_no_refusals(answer):
    assert yes_no(answer).choice is None  # MME's 'other': counted wrong


def test_unknown_rule_is_named():
    with pytest.raises(ValueError, match="unknown extraction rule 'llm'.*mmbench"):
        get_extractor("llm")
