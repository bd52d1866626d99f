"""The shared Trainer: a resumed run reproduces the uninterrupted run's losses exactly (dropout, accumulation and
alternating tasks included), accumulation equals one big batch, NaN keeps and names the last good checkpoint,
and a loss-curve PNG is drawn."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sensorium.train.tasks import Alternating, Task
from sensorium.train.trainer import TrainConfig, Trainer, autocast

pytestmark = pytest.mark.usefixtures("one_thread")


class _Net(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


def _batches(seed: int = 0, size: int = 8):
    def batches(start: int):
        step = start
        while True:
            g = torch.Generator().manual_seed(seed * 1000 + step)
            x = torch.randn(size, 4, generator=g)
            yield x, x.sum(1)
            step += 1
    return batches


def _step(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    x, y = batch
    loss = (model(x) - y).pow(2).mean()
    return loss, {"mse": loss.item()}


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 12, "lr": 1e-2, "warmup": 2, "ckpt_every": 4, "log_every": 1, "eval_every": 100,
                          **kw})


def _crash_at(step_fn, calls: int):
    count = {"n": 0}

    def crashing(model, batch):
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt("simulated crash")
        return step_fn(model, batch)
    return crashing


def _losses(history) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in history]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resumed_run_reproduces_the_uninterrupted_losses_exactly(tmp_path, accumulate):
    config = _config(accumulate=accumulate)
    full = Trainer(_Net(0), config, tmp_path / "a", progress=False).fit(_batches(), _step)
    crashed = Trainer(_Net(0), config, tmp_path / "b", progress=False)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(_batches(), _crash_at(_step, 7 * accumulate))
    resumed = Trainer(_Net(123), config, tmp_path / "b", progress=False)  # different init: all comes from the checkpoint
    assert resumed.resume() and resumed.step == 4
    history = resumed.fit(_batches(), _step)
    assert _losses(history) == _losses(full) and len(history) == 12
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))  # the crashed run's steps 5-6 were dropped
    assert (tmp_path / "b" / "loss_curve.png").stat().st_size > 0


def test_accumulation_equals_one_big_batch(tmp_path):
    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Linear(4, 1)

    def step(m, batch):
        x, y = batch
        return (m(x).squeeze(-1) - y).pow(2).mean(), {}

    def halves(start):
        for x, y in _batches(size=8)(start // 2):
            yield x[:4], y[:4]
            yield x[4:], y[4:]

    big, small = model(), model()
    Trainer(big, _config(steps=5), tmp_path / "big", progress=False).fit(_batches(size=8), step)
    Trainer(small, _config(steps=5, accumulate=2), tmp_path / "small", progress=False).fit(halves, step)
    assert torch.allclose(big.weight, small.weight, atol=1e-6)


def test_nan_keeps_and_names_the_last_good_checkpoint(tmp_path):
    def nan_at(calls):
        count = {"n": 0}

        def step(model, batch):
            count["n"] += 1
            loss, logs = _step(model, batch)
            return (loss * float("nan") if count["n"] == calls else loss), logs
        return step

    trainer = Trainer(_Net(0), _config(), tmp_path / "r", progress=False)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 6; rolled back to the last good checkpoint "
                                                 r".*step-0000004 \(step 4\), which is kept"):
        trainer.fit(_batches(), nan_at(6))
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints" / "train").iterdir()) == ["step-0000004"]
    early = Trainer(_Net(0), _config(), tmp_path / "e", progress=False)
    with pytest.raises(FloatingPointError, match=r"at step 2; rolled back to the last good checkpoint .*step-0000001"):
        early.fit(_batches(), nan_at(2))


def test_alternating_tasks_resume_exactly_and_log_each_task(tmp_path):
    def tasks() -> Alternating:
        return Alternating({"sum": Task(_batches(1), _step, 1.0), "other": Task(_batches(2), _step, 3.0)},
                           schedule="weighted", seed=4)

    assert [Alternating({"a": Task(None, None), "b": Task(None, None)}).task_at(s) for s in range(3)] == ["a", "b", "a"]
    alt = tasks()
    picks = [alt.task_at(s) for s in range(200)]
    assert 0.6 < picks.count("other") / 200 < 0.9
    full = Trainer(_Net(0), _config(), tmp_path / "a", progress=False).fit(alt.batches, alt.step_fn)
    assert any("loss/other" in r for r in full) and any("loss/sum" in r for r in full)
    crashed = Trainer(_Net(0), _config(), tmp_path / "b", progress=False)
    alt = tasks()
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(alt.batches, _crash_at(alt.step_fn, 10))
    resumed = Trainer(_Net(5), _config(), tmp_path / "b", progress=False)
    resumed.resume()
    alt = tasks()
    assert _losses(resumed.fit(alt.batches, alt.step_fn)) == _losses(full)


def test_autocast_is_bf16_on_cuda_only():
    assert isinstance(autocast("auto", torch.device("cpu")), type(autocast("fp32", torch.device("cpu"))))
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast("fp8", torch.device("cpu"))


@pytest.mark.gpu
def test_bf16_autocast_on_cuda(tmp_path):
    model = nn.Linear(4, 1).cuda()
    seen = []

    def step(m, batch):
        x, y = (t.cuda() for t in batch)
        out = m(x).squeeze(-1)
        seen.append(out.dtype)
        return (out.float() - y).pow(2).mean(), {}

    Trainer(model, _config(steps=2), tmp_path, progress=False).fit(_batches(), step)
    assert seen == [torch.bfloat16, torch.bfloat16]
