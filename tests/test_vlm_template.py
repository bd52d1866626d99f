"""Chat template and label masking: only answers (and the stop marker ending them) carry loss; a template that
tokenizes differently at training and generation time fails loudly instead of training on a wrong mask."""

from __future__ import annotations

import pytest
import torch
from _vlm import tokenizer

from sensorium.models.template import IGNORE, ChatTemplate, ChatTokenizer, TemplateError, pad_rows

CONV = [{"role": "user", "content": "<image>\nWhat shape is the red object?"},
        {"role": "assistant", "content": "circle"},
        {"role": "user", "content": "How many circles are there?"},
        {"role": "assistant", "content": "2"}]


def test_labels_cover_answers_and_their_stop_marker_only():
    tok = tokenizer()
    enc = tok.encode(CONV)
    labelled = [tok.tokenizer.id_to_token(i) for i, lab in zip(enc.ids, enc.labels) if lab != IGNORE]
    assert labelled == ["circle", "<|end|>", "2", "<|end|>"]
    assert all(lab in (IGNORE, i) for i, lab in zip(enc.ids, enc.labels))
    assert enc.media == ["image"]
    prompt = tok.encode(CONV[:1], generation=True)
    assert enc.ids[: len(prompt)] == prompt.ids  # what generation sees is what training saw
    assert all(lab == IGNORE for lab in prompt.labels)


def test_wrong_template_fails_loudly():
    """'ASSISTANT: {content}' puts the separating space in the prompt, but BPE glues it to the answer (' circle'):
    training and generation would see different tokens. It must raise, not train on a shifted mask."""
    bad = ChatTemplate(user_format="USER: {content}\n", assistant_format="ASSISTANT: {content}\n", stop=["\n"])
    tok = tokenizer(bad)
    with pytest.raises(TemplateError, match="spans a prompt/answer boundary"):
        tok.encode(CONV)


@pytest.mark.parametrize("template, message", [
    (ChatTemplate(assistant_format="<|assistant|>"), "exactly once"),
    (ChatTemplate(user_format="{content}{content}"), "exactly once"),
])
def test_malformed_formats_raise(template, message):
    with pytest.raises(TemplateError, match=message):
        tokenizer(template).encode(CONV)


def test_unknown_role_and_missing_placeholder_token():
    tok = tokenizer()
    with pytest.raises(TemplateError, match="unknown role 'Assistant'"):
        tok.encode([{"role": "user", "content": "hi"}, {"role": "Assistant", "content": "circle"}])
    with pytest.raises(TemplateError, match="no special token '<video>'"):
        tok.placeholder_id("video")


def test_save_load_and_padding(tmp_path):
    tok = tokenizer()
    tok.save(tmp_path)
    again = ChatTokenizer.load(tmp_path)
    assert again.encode(CONV).ids == tok.encode(CONV).ids and again.stop_ids == tok.stop_ids
    ids, mask = pad_rows([[1, 2, 3], [4]], 0, align="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[True] * 3, [False, False, True]]
    ids, mask = pad_rows([[1, 2, 3], [4]], 0)
    assert torch.equal(ids, torch.tensor([[1, 2, 3], [4, 0, 0]]))
