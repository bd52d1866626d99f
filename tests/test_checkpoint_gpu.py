"""On CUDA in bf16 (SDPA's flash/efficient kernels): Sensorium's loaded CLIP and Llama stay as close to
transformers' bf16 SDPA models as bf16 allows, and both stay near the fp32 result."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from _reference import TEXTS, make_hf_clip, perturb, random_images  # noqa: E402
from sensorium.interop import load_pretrained  # noqa: E402

pytestmark = pytest.mark.gpu
BF16_TOL = 3e-2


def test_bf16_sdpa_clip_parity(tmp_path):
    root = make_hf_clip(tmp_path)
    pretrained = load_pretrained(root)
    ids, mask = pretrained.text(TEXTS)
    pixels = pretrained.image(random_images())
    hf = transformers.CLIPModel.from_pretrained(root, attn_implementation="sdpa", dtype=torch.bfloat16).cuda().eval()
    ours = pretrained.model.to("cuda", torch.bfloat16)
    with torch.no_grad():
        ref = hf(input_ids=ids.cuda(), attention_mask=mask.long().cuda(),
                 pixel_values=pixels.cuda().bfloat16()).logits_per_image.float()
        got = ours(pixels.cuda().bfloat16(), ids.cuda(), mask.cuda()).float()
    assert (got - ref).abs().max().item() < BF16_TOL * max(1.0, ref.abs().max().item())


def test_bf16_sdpa_llama_parity(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    perturb(transformers.LlamaForCausalLM(cfg)).save_pretrained(tmp_path)
    ids = torch.randint(3, 64, (2, 48), generator=torch.Generator().manual_seed(0)).cuda()
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa",
                                                       dtype=torch.bfloat16).cuda().eval()
    model = load_pretrained(tmp_path).model
    with torch.no_grad():
        fp32 = model.cuda()(ids)
        ours = model.to(torch.bfloat16)(ids).float()
        ref = hf(ids).logits.float()
    scale = fp32.abs().max().item()
    assert (ours - ref).abs().max().item() < BF16_TOL * scale
    assert (ours - fp32).abs().max().item() < 2 * BF16_TOL * scale
    assert torch.equal(model.generate(ids[:1, :8], max_new_tokens=4)[:, :8], ids[:1, :8])
