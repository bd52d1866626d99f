"""Modality experts route tokens by modality; the token-choice MoE mixes its top-k experts by renormalised router
probabilities, reports a balancing loss of 1 for uniform routing, drops overflow beyond capacity, and trains."""

from __future__ import annotations

import pytest
import torch

from sensorium.nn import MoE, ModalityExperts, Transformer, TransformerConfig, moe_aux_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_modality_experts_route_each_token_to_its_modality():
    torch.manual_seed(0)
    experts = ModalityExperts(8, 16, n_groups=3)
    x = torch.randn(2, 5, 8)
    groups = torch.tensor([[0, 0, 1, 2, 2], [1, 1, 1, 0, 2]])
    out = experts(x, groups)
    for g in range(3):
        sel = groups == g
        assert torch.allclose(out[sel], experts.experts[g](x[sel]), atol=1e-6)
    assert torch.allclose(experts(x, 1), experts.experts[1](x))
    assert torch.allclose(experts(x, torch.tensor([2, 2]))[0], experts.experts[2](x[0]), atol=1e-6)


def test_transformer_with_expert_ffn_uses_the_group():
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=8, depth=2, n_heads=2, mlp_hidden=16)
    trunk = Transformer(cfg, lambda layer: ModalityExperts(8, 16, 2))
    x = torch.randn(1, 4, 8)
    assert not torch.allclose(trunk(x, groups=0), trunk(x, groups=1))


def test_moe_mixes_top_k_experts_by_renormalised_probabilities():
    torch.manual_seed(0)
    moe = MoE(8, 16, n_experts=4, top_k=2)
    x = torch.randn(3, 8)
    probs = moe.router(x).softmax(-1)
    gate, idx = probs.topk(2, dim=-1)
    gate = gate / gate.sum(-1, keepdim=True)
    expected = torch.stack([sum(gate[t, j] * moe.experts[int(idx[t, j])](x[t]) for j in range(2)) for t in range(3)])
    assert torch.allclose(moe(x), expected, atol=1e-6)


def test_moe_balance_loss_is_one_when_uniform_and_capacity_drops_overflow():
    moe = MoE(4, 8, n_experts=4, top_k=4, balance_weight=1.0)
    torch.nn.init.zeros_(moe.router.weight)  # uniform router
    moe(torch.randn(10, 4))
    assert abs(moe.stats["balance"] - 1.0) < 1e-6 and moe.stats["dropped"] == 0
    skewed = MoE(4, 8, n_experts=4, top_k=1, capacity_factor=1.0)
    with torch.no_grad():
        skewed.router.weight.zero_()
        skewed.router.weight[0, 0] = 100.0  # every token with x0 > 0 goes to expert 0
    x = torch.randn(64, 4).abs()
    skewed(x)
    assert skewed.stats["balance"] > 3.5 and skewed.stats["dropped"] == 0.75  # capacity 16 of 64 tokens


def test_moe_aux_loss_trains_router_towards_balance():
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=8, depth=2, n_heads=2, mlp_hidden=16)
    trunk = Transformer(cfg, lambda layer: MoE(8, 16, n_experts=4, top_k=1, balance_weight=1.0))
    with torch.no_grad():
        for block in trunk.blocks:
            block.mlp.router.weight.normal_(0, 1)
    opt = torch.optim.Adam(trunk.parameters(), lr=3e-2)
    x = torch.randn(8, 6, 8)
    trunk(x)
    first = float(moe_aux_loss(trunk).detach())
    for _ in range(60):
        trunk(x)
        loss = moe_aux_loss(trunk)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(moe_aux_loss(trunk).detach())
    assert last < first and last < 2.3
