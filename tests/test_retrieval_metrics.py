import pytest
import torch

from sensorium.eval.baselines import CCAMap, RidgeMap
from sensorium.eval.retrieval import chance_metrics, ranks, retrieval_metrics, summarize


def test_ranks_on_hand_made_similarities():
    # gallery = basis vectors; query i is closest to gallery perm[i]
    gallery = torch.eye(4)
    query = torch.tensor([[1.0, 0.5, 0.2, 0.0],   # target 0 ranked 1st
                          [0.9, 0.5, 0.0, 0.0],   # target 1 ranked 2nd
                          [0.9, 0.8, 0.1, 0.0],   # target 2 ranked 3rd
                          [0.4, 0.3, 0.2, 0.1]])  # target 3 ranked 4th
    r = ranks(query, gallery)
    assert r.tolist() == [1, 2, 3, 4]
    m = summarize(r, ks=(1, 2, 10))
    assert m == {"R@1": 25.0, "R@2": 50.0, "R@10": 100.0, "median_rank": 2.0}


def test_groups_make_duplicates_interchangeable():
    gallery = torch.eye(3)
    query = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    groups = torch.tensor([0, 0, 1])  # items 0 and 1 share a caption
    assert ranks(query, gallery, groups, groups).tolist() == [1, 1, 1]
    assert ranks(query, gallery).tolist() == [3, 3, 1]  # without groups (ties pessimistic)


def test_ties_are_pessimistic():
    r = ranks(torch.ones(2, 2), torch.ones(2, 2))
    assert r.tolist() == [2, 2]


def test_chance_metrics():
    g = torch.arange(100)
    c = chance_metrics(g, g, ks=(1, 10))
    assert c["R@1"] == pytest.approx(1.0) and c["R@10"] == pytest.approx(10.0)
    assert c["median_rank"] == pytest.approx(50.5)
    g2 = torch.arange(50).repeat_interleave(2)  # each query has 2 relevant items
    assert chance_metrics(g2, g2, ks=(1,))["R@1"] == pytest.approx(2.0)


def test_perfect_and_random_retrieval():
    torch.manual_seed(0)
    x = torch.randn(50, 8)
    assert retrieval_metrics(x, x)["R@1"] == 100.0
    assert retrieval_metrics(x, torch.randn(50, 8))["R@10"] < 60.0


@pytest.mark.parametrize("cls", [RidgeMap, CCAMap])
def test_linear_baselines_recover_a_linear_map(cls):
    torch.manual_seed(0)
    x = torch.randn(400, 16)
    y = x @ torch.randn(16, 12) + 0.01 * torch.randn(400, 12)
    fitted = cls().fit(x[:300], y[:300]) if cls is RidgeMap else cls(k=12).fit(x[:300], y[:300])
    m = retrieval_metrics(fitted.source(x[300:]), fitted.target(y[300:]))
    assert m["R@1"] > 90.0
