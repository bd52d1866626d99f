"""Symile's XOR result at its extremes, small and fast: with c = a XOR b (p_hat = 1) Symile retrieves b from (a, c)
perfectly while pairwise CLIP stays at chance (1/32); with c = a (p_hat = 0) nothing can."""

from __future__ import annotations

import pytest

from sensorium.train.trainer import TrainConfig
from sensorium.train.xor import XorConfig, bayes_accuracy, binary_xor, train_one

pytestmark = pytest.mark.usefixtures("one_thread")


def test_data_follows_the_xor_recipe():
    data = binary_xor(2000, 5, 1.0, seed=0)
    assert ((data["a"] + data["b"]) % 2 == data["c"]).all()
    half = binary_xor(4000, 5, 0.5, seed=0)
    xor_rows = ((half["a"] + half["b"]) % 2 == half["c"]).all(1) & (half["c"] != half["a"]).any(1)
    assert 0.45 < xor_rows.float().mean() < 0.52  # p_hat minus the rows where b = 0 makes XOR equal a
    assert bayes_accuracy(0.0, 5) == 1 / 32 and bayes_accuracy(1.0, 5) == 1.0


@pytest.mark.parametrize("p_hat", [1.0, 0.0])
def test_symile_captures_xor_and_clip_cannot(tmp_path, p_hat):
    config = XorConfig(n_train=2048, n_test=1000, train=TrainConfig(
        steps=100, lr=0.1, weight_decay=0.01, warmup=5, batch_size=256, grad_clip=0.0, eval_every=10**9,
        ckpt_every=10**9, log_every=50))
    symile = train_one(config, p_hat, "symile", 0, tmp_path)["accuracy"]
    clip = train_one(config, p_hat, "clip", 0, tmp_path)["accuracy"]
    assert clip < 0.08  # chance is 1/32
    assert symile > 0.95 if p_hat == 1.0 else symile < 0.08
