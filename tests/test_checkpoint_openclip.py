"""open_clip: tiny random-weight CLIP (quick_gelu, causal text, argmax pool) and CustomTextCLIP
(SigLIP-like: bidirectional text, last-token pool, projection bias, mean-pooled ViT, logit bias) saved as
open_clip directories, loaded into Sensorium and compared through each side's own preprocessing and
tokenizer; exported back to open_clip, and converted open_clip -> HF CLIP -> open_clip."""

from __future__ import annotations

import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from _reference import TEXTS, max_diff, perturb, random_images  # noqa: E402
from sensorium.interop import export_pretrained, load_pretrained  # noqa: E402
from sensorium.core.files import save_state_dict  # noqa: E402

TOL = 1e-4
VISION = dict(image_size=32, patch_size=8, width=32, layers=2, head_width=8, mlp_ratio=2.0)
TEXT = dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=2, mlp_ratio=2.0)
VARIANTS = {
    "clip-quickgelu": dict(embed_dim=16, quick_gelu=True, vision_cfg=VISION, text_cfg=TEXT),
    "customtext-siglip-like": dict(
        embed_dim=16, custom_text=True, init_logit_bias=-10.0,
        vision_cfg={**VISION, "pool_type": "avg", "final_ln_after_pool": True, "norm_kwargs": {"eps": 1e-6}},
        text_cfg={**TEXT, "no_causal_mask": True, "pool_type": "last", "proj_bias": True,
                  "norm_kwargs": {"eps": 1e-6}}),
}
PREPROCESS = {"size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic",
              "resize_mode": "shortest"}


@pytest.fixture(scope="module", params=list(VARIANTS))
def openclip_dir(request, tmp_path_factory):
    cfg = VARIANTS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    kwargs = {k: v for k, v in cfg.items() if k != "custom_text"}
    model = (open_clip.model.CustomTextCLIP if cfg.get("custom_text") else open_clip.model.CLIP)(**kwargs)
    save_state_dict(perturb(model).state_dict(), root / "open_clip_model.safetensors")
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": PREPROCESS}))
    return request.param, root


def _reference(root):
    """open_clip's own factory, transform and tokenizer on the raw inputs."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{root}")
    model.eval()
    ids = open_clip.get_tokenizer(f"local-dir:{root}")(TEXTS)
    pixels = torch.stack([preprocess(im) for im in random_images()])
    with torch.no_grad():
        image, text = model.encode_image(pixels), model.encode_text(ids)
        logits = model.get_logits(pixels, ids)[0]
    return ids, pixels, image, text, logits


def _check(name, pretrained, ids_ref, pixels_ref, image_ref, text_ref, logits_ref):
    ids, mask = pretrained.text(TEXTS)
    pixels = pretrained.image(random_images())
    assert torch.equal(ids, ids_ref), f"token ids differ:\n{ids}\n{ids_ref}"
    assert max_diff(f"{name} pixel_values", pixels, pixels_ref) < 1e-5
    with torch.no_grad():
        assert max_diff(f"{name} image features", pretrained.model.encode_image(pixels), image_ref) < TOL
        assert max_diff(f"{name} text features", pretrained.model.encode_text(ids, mask), text_ref) < TOL
        assert max_diff(f"{name} logits_per_image", pretrained.model(pixels, ids, mask), logits_ref) < TOL


def test_openclip_parity_and_round_trip(openclip_dir, tmp_path):
    name, root = openclip_dir
    reference = _reference(root)
    pretrained = load_pretrained(root)
    assert pretrained.family == "open_clip"
    _check(name, pretrained, *reference)
    out = export_pretrained(pretrained, tmp_path / "export")
    _check(f"{name} exported", load_pretrained(out), *_reference(out))


def test_openclip_to_hf_clip_and_back(openclip_dir, tmp_path):
    """The converter: open_clip -> HF CLIP (checked with transformers) -> open_clip (checked with open_clip)."""
    name, root = openclip_dir
    if name != "clip-quickgelu":
        pytest.skip("a SigLIP-like open_clip model (mean pool, projection bias) has no HF CLIP equivalent")
    from transformers import CLIPModel

    ids_ref, pixels_ref, image_ref, text_ref, logits_ref = _reference(root)
    hf_dir = export_pretrained(load_pretrained(root), tmp_path / "hf", family="clip")
    hf = CLIPModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        out = hf(input_ids=ids_ref, pixel_values=pixels_ref)
    assert max_diff("open_clip->HF CLIP logits_per_image", out.logits_per_image, logits_ref) < TOL
    assert max_diff("open_clip->HF CLIP image_embeds", out.image_embeds,
                    torch.nn.functional.normalize(image_ref, dim=-1)) < TOL
    back = export_pretrained(load_pretrained(hf_dir), tmp_path / "back", family="open_clip")
    _check("open_clip->HF->open_clip", load_pretrained(back), *_reference(back))
