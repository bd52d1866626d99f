"""Llama-family LMs: tiny random-weight LlamaForCausalLM / Qwen2ForCausalLM references (GQA, tied and
untied embeddings, llama3 RoPE scaling) loaded into Sensorium's LlamaLM; logits, greedy generation and
tokenization compared with transformers; exported back and reloaded by transformers."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from _reference import TEXTS, max_diff, perturb  # noqa: E402
from sensorium.interop import export_pretrained, load_pretrained  # noqa: E402

TOL = 1e-4
BASE = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
VARIANTS = {
    "llama-gqa-untied": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    "llama-tied-llama3rope": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True, num_key_value_heads=1, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=16))),
    "qwen2-bias-tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
}


def _tokenizer(root):
    """A small byte-level BPE tokenizer.json (bos added by the post-processor), saved with transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=64, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:40])
    tok.train_from_iterator(TEXTS * 5, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            model_max_length=64).save_pretrained(root)


@pytest.fixture(scope="module", params=list(VARIANTS))
def llama_dir(request, tmp_path_factory):
    config_cls, model_cls, extra = VARIANTS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    cfg = getattr(transformers, config_cls)(**{**BASE, **extra})
    perturb(getattr(transformers, model_cls)(cfg)).save_pretrained(root)
    _tokenizer(root)
    return request.param, root


def _batch(root):
    tok = transformers.AutoTokenizer.from_pretrained(root)
    tok.padding_side = "left"
    return tok, tok(TEXTS, padding=True, return_tensors="pt")


def _check(name, root, hf_root):
    reference = transformers.AutoModelForCausalLM.from_pretrained(hf_root).eval()
    tok, batch = _batch(hf_root)
    pretrained = load_pretrained(root)
    ids, mask = pretrained.text(TEXTS)
    assert ids[0, : mask[0].sum()].tolist() == tok(TEXTS[0])["input_ids"], "tokenization differs"
    model = pretrained.model
    with torch.no_grad():
        ref = reference(**batch).logits
        ours = model(batch["input_ids"], padding=batch["attention_mask"])
    real = batch["attention_mask"].bool()
    assert max_diff(f"{name} logits (left-padded batch)", ours[real], ref[real]) < TOL
    ref_gen = reference.generate(**batch, max_new_tokens=12, do_sample=False)
    our_gen = model.generate(batch["input_ids"], max_new_tokens=12, padding=batch["attention_mask"])
    assert torch.equal(our_gen, ref_gen), f"greedy tokens differ:\n{our_gen}\n{ref_gen}"
    single = tok(TEXTS[2], return_tensors="pt")["input_ids"]
    assert torch.equal(model.generate(single, max_new_tokens=12),
                       reference.generate(single, max_new_tokens=12, do_sample=False))


def test_parity_generation_and_round_trip(llama_dir, tmp_path):
    name, root = llama_dir
    pretrained = load_pretrained(root)
    assert pretrained.family == "llama"
    assert pretrained.model.cfg.tie_embeddings == ("-tied" in name)
    _check(name, root, root)
    out = export_pretrained(pretrained, tmp_path / "export")
    _check(f"{name} exported", out, out)


def test_input_embeddings_path_matches_ids(llama_dir):
    """Vision-language decoders splice projected image tokens in through `embeds=`."""
    model = load_pretrained(llama_dir[1]).model
    ids = torch.tensor([[1, 7, 9, 11, 13]])
    with torch.no_grad():
        assert torch.equal(model(embeds=model.embed(ids)), model(ids))
