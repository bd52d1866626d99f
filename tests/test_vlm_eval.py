"""VQA answer normalisation and parse failures (counted wrong, reported as a rate); CIDEr-D against values
computed by hand; BLEU through sacrebleu."""

from __future__ import annotations

import pytest

from sensorium.eval.captioning import caption_tokens, cider_d
from sensorium.eval.vqa import normalize_answer, parse_answer, vqa_report

SPACE = {"circle", "square", "star"}


def test_normalisation_and_parsing_are_deterministic():
    assert normalize_answer(" The Circle. ") == "circle"
    assert normalize_answer("Two") == "2" and normalize_answer("colour") == "color"
    assert parse_answer("circle", SPACE) == "circle"
    assert parse_answer("it is a star!", SPACE) == "star"  # exactly one answer named
    assert parse_answer("a star or a circle", SPACE) is None  # two: no guessing
    assert parse_answer("stars", SPACE) is None and parse_answer("", SPACE) is None
    assert parse_answer("10", {"1", "0"}) is None  # whole words only


def test_vqa_report_counts_parse_failures_as_wrong():
    preds = ["circle", "the square", "banana", "3", "three", "left"]
    golds = ["circle", "star", "circle", "3", "3", "right"]
    types = ["shape", "shape", "shape", "count", "count", "position"]
    families = ["non-relational", "non-relational", "non-relational", "relational", "relational", "non-relational"]
    spaces = {"shape": SPACE, "count": {"1", "2", "3"}, "position": {"left", "right"}}
    r = vqa_report(preds, golds, types, families, spaces)
    assert r["n"] == 6 and r["accuracy"] == pytest.approx(100 * 3 / 6)
    assert r["parse_failure_rate"] == pytest.approx(100 / 6, abs=0.01)
    assert r["by_type"]["shape"] == {"n": 3, "accuracy": pytest.approx(33.33), "parse_failure_rate": pytest.approx(33.33)}
    assert r["by_type"]["count"]["accuracy"] == 100.0
    assert r["by_family"]["relational"]["accuracy"] == 100.0 and r["by_family"]["non-relational"]["n"] == 4


def test_cider_d_matches_hand_computed_values():
    """Two images, one reference each; N = 2 so every n-gram seen in one reference weighs ln 2.
    Image 1: candidate == reference 'a b': unigram and bigram cosines are 1, tri/4-grams absent ->
    10 * (1 + 1 + 0 + 0) / 4 = 5. Image 2: 'c e' vs 'c d': unigram cosine ln2^2 / (sqrt2 ln2)^2 = 1/2, bigram 0 ->
    10 * 0.5 / 4 = 1.25. Corpus CIDEr-D = (5 + 1.25) / 2 = 3.125."""
    mean, per = cider_d(["a b", "c e"], [["a b"], ["c d"]])
    assert per == pytest.approx([5.0, 1.25]) and mean == pytest.approx(3.125)
    # the Gaussian length penalty (sigma 6): 'a' against 'a b' in the same corpus: unigram cosine 1/sqrt2
    _, per = cider_d(["a", "c d"], [["a b"], ["c d"]])
    assert per[0] == pytest.approx(10 * (2 ** -0.5) / 4 * 2.718281828 ** (-1 / 72))
    assert caption_tokens("Owl, on a branch!") == ["owl", "on", "a", "branch"]
    with pytest.raises(ValueError, match="2 candidates but 1"):
        cider_d(["a", "b"], [["a"]])


def test_bleu_through_sacrebleu():
    pytest.importorskip("sacrebleu")
    from sensorium.eval.captioning import bleu, caption_report

    same = bleu(["a red circle on the left side"], [["a red circle on the left side"]])
    assert same["bleu4"] == pytest.approx(100.0)
    report = caption_report(["a big red circle on the left", "a small blue square at the top"],
                            [["a big red circle on the right", "one red circle"], ["a small blue square at the top"]])
    assert report["n"] == 2 and 0 < report["bleu4"] < 100 and report["cider_d"] > 0
