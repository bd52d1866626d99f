"""HF CLIP and SigLIP: tiny random-weight references saved with transformers, loaded into Sensorium's
DualEncoder through each side's full preprocessing (raw strings and PIL images), exported back."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from _reference import TEXTS, TINY_ENCODER, make_hf_clip, max_diff, perturb, random_images  # noqa: E402
from sensorium.interop import export_pretrained, load_pretrained  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_hf_clip(tmp_path_factory.mktemp("hf-clip"))


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    root = tmp_path_factory.mktemp("hf-siglip")
    words = ["<pad>", "</s>", "<unk>"] + sorted({w for t in TEXTS for w in t.lower().replace(",", "").replace("!", "").split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    from tokenizers import normalizers
    tok.normalizer = normalizers.Lowercase()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="</s>", eos_token="</s>", unk_token="<unk>",
                            model_max_length=16).save_pretrained(root)
    torch.manual_seed(1)
    cfg = SiglipConfig(text_config=dict(**TINY_ENCODER, vocab_size=len(words), max_position_embeddings=16, projection_size=32),
                       vision_config=dict(**TINY_ENCODER, image_size=32, patch_size=8))
    perturb(SiglipModel(cfg), seed=1).save_pretrained(root)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(root)
    return root


def _hf_outputs(root, model_cls, tok_cls, proc_cls, padding):
    """Reference: the library's own tokenizer, image processor and model on the raw inputs."""
    model = model_cls.from_pretrained(root).eval()
    text = tok_cls.from_pretrained(root)(TEXTS, padding=padding, max_length=16, truncation=True, return_tensors="pt")
    pixels = proc_cls.from_pretrained(root)(random_images(), return_tensors="pt")["pixel_values"]
    kwargs = {"attention_mask": text["attention_mask"]} if padding is True else {}
    with torch.no_grad():
        out = model(input_ids=text["input_ids"], pixel_values=pixels, **kwargs)
    return text["input_ids"], pixels, out


def _check_parity(name, pretrained, hf_ids, hf_pixels, out):
    """Sensorium's preprocessing and model on the same raw inputs, compared with the reference."""
    ids, mask = pretrained.text(TEXTS)
    pixels = pretrained.image(random_images())
    assert torch.equal(ids, hf_ids), f"token ids differ:\n{ids}\n{hf_ids}"
    assert max_diff(f"{name} pixel_values", pixels, hf_pixels) < 1e-5
    model = pretrained.model
    with torch.no_grad():
        text, image = model.encode_text(ids, mask, normalize=True), model.encode_image(pixels, normalize=True)
        logits = model(pixels, ids, mask)
    assert max_diff(f"{name} text_embeds", text, out.text_embeds) < TOL
    assert max_diff(f"{name} image_embeds", image, out.image_embeds) < TOL
    assert max_diff(f"{name} logits_per_image", logits, out.logits_per_image) < TOL


def _clip_reference(root):
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return _hf_outputs(root, CLIPModel, CLIPTokenizer, CLIPImageProcessorPil, padding=True)


def _siglip_reference(root):
    from transformers import PreTrainedTokenizerFast, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    return _hf_outputs(root, SiglipModel, PreTrainedTokenizerFast, SiglipImageProcessorPil, padding="max_length")


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_parity_and_round_trip(family, clip_dir, siglip_dir, tmp_path):
    root, reference = (clip_dir, _clip_reference) if family == "clip" else (siglip_dir, _siglip_reference)
    pretrained = load_pretrained(root)
    assert pretrained.family == family
    _check_parity(family, pretrained, *reference(root))
    out = export_pretrained(pretrained, tmp_path / "export")
    _check_parity(f"{family} exported", load_pretrained(out), *reference(out))
