"""Fault injection on checkpoints and the training loop (in process): every kind of damage to a checkpoint is
named on load; resume takes the newest checkpoint that verifies, names and sets aside the damaged ones, never
counts a `.tmp`; a full disk during a save leaves the previous checkpoint intact; divergence rolls back to the last
finite checkpoint; the run directory has one writer (a live holder is named, a dead one's lock is taken over)."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from _faults import Net, batches, config, flip_byte, losses, step_fn, truncate
from sensorium.core import files
from sensorium.core.files import CheckpointError, load_state, save_state
from sensorium.core.lock import RunLocked, acquire, release, run_lock
from sensorium.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = Path(__file__).resolve().parents[1] / "src"


def _state() -> dict:
    torch.manual_seed(0)
    return {"model": {"w": torch.randn(64, 32), "b": torch.zeros(3)}, "step": 7, "note": "x"}


DAMAGE = {
    "truncated tensors": (lambda d: truncate(d / "tensors.safetensors", 0.6), "tensors.safetensors"),
    "empty tensors": (lambda d: truncate(d / "tensors.safetensors", 0), "tensors.safetensors"),
    "tensors header garbage": (lambda d: (d / "tensors.safetensors").write_bytes(b"\xff" * 200), "tensors.safetensors"),
    "one byte flipped (same size)": (lambda d: flip_byte(d / "tensors.safetensors"), "tensors.safetensors"),
    "state.json cut short": (lambda d: truncate(d / "state.json", 0.5), "state.json"),
    "state.json not JSON, same size": (lambda d: (d / "state.json").write_text(
        "#" * (d / "state.json").stat().st_size), "state.json"),
    "tensors file missing": (lambda d: (d / "tensors.safetensors").unlink(), "tensors.safetensors"),
    "manifest garbage": (lambda d: (d / "manifest.json").write_text("{oops"), "manifest.json"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_state_directory_is_refused_naming_the_file(tmp_path, kind):
    save_state(tmp_path / "ckpt", _state())
    assert torch.equal(load_state(tmp_path / "ckpt")["model"]["w"], _state()["model"]["w"])
    damage, name = DAMAGE[kind]
    damage(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_state(tmp_path / "ckpt")


def test_without_a_manifest_truncation_is_still_caught_by_the_header_check(tmp_path):
    save_state(tmp_path / "ckpt", _state())
    (tmp_path / "ckpt" / "manifest.json").unlink()  # a checkpoint written before manifests existed
    assert load_state(tmp_path / "ckpt")["step"] == 7
    truncate(tmp_path / "ckpt" / "tensors.safetensors", 0.9)
    with pytest.raises(CheckpointError, match=r"tensors.safetensors: truncated or corrupt safetensors file"):
        load_state(tmp_path / "ckpt")


def _train(run: Path, **kw) -> list:
    return Trainer(Net(), config(**kw), run, progress=False).fit(batches, step_fn)


@pytest.mark.parametrize("kind", ["truncated tensors", "state.json cut short", "one byte flipped (same size)"])
def test_resume_skips_damaged_newest_checkpoints_names_them_and_reproduces_the_losses(tmp_path, kind, caplog):
    full = _train(tmp_path / "full")
    run = tmp_path / "run"
    _train(run, steps=12)  # checkpoints at 4, 8, 12 (keep 3)
    ckpts = run / "checkpoints" / "train"
    DAMAGE[kind][0](ckpts / "step-0000012")
    DAMAGE[kind][0](ckpts / "step-0000008")
    (ckpts / "step-0000099.tmp").mkdir()  # a save that never finished: never counted
    (ckpts / "step-0000099.tmp" / "state.json").write_text("{}")
    trainer = Trainer(Net(5), config(), run, progress=False)
    with caplog.at_level(logging.WARNING):
        assert trainer.resume() and trainer.step == 4
    assert "skipped 2 damaged checkpoint(s)" in caplog.text and "step-0000012" in caplog.text
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000004", "step-0000008.damaged",
                                                       "step-0000012.damaged", "step-0000099.tmp"]
    assert losses(trainer.fit(batches, step_fn)) == losses(full)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))


def test_every_checkpoint_damaged_starts_over_with_a_warning(tmp_path, caplog):
    run = tmp_path / "run"
    _train(run, steps=8)
    for ckpt in (run / "checkpoints" / "train").iterdir():
        truncate(ckpt / "tensors.safetensors", 10)
    trainer = Trainer(Net(), config(), run, progress=False)
    with caplog.at_level(logging.WARNING):
        assert not trainer.resume() and trainer.step == 0
    assert "resuming from the start" in caplog.text


def test_torn_metrics_line_from_a_crash_is_dropped_on_resume(tmp_path):
    run = tmp_path / "run"
    _train(run, steps=8)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"stage": "train", "step": 9, "lo')  # killed mid-write
    trainer = Trainer(Net(), config(), run, progress=False)
    assert trainer.resume() and trainer.step == 8
    trainer.fit(batches, step_fn)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_save = files.save_file
    calls = {"n": 0}

    def failing_save(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: half the bytes reach the disk, then it is full
            real_save(tensors, path, metadata)
            truncate(Path(path), 0.5)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, metadata)

    monkeypatch.setattr(files, "save_file", failing_save)
    trainer = Trainer(Net(), config(), run, progress=False)
    with pytest.raises(OSError, match=r"could not write .*step-0000008 \(No space left on device\); nothing was "
                                      r"replaced, earlier checkpoints are intact") as err:
        trainer.fit(batches, step_fn)
    assert err.value.errno == errno.ENOSPC
    ckpts = run / "checkpoints" / "train"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000004"]  # no .tmp left behind
    assert load_state(ckpts / "step-0000004")["step"] == 4  # verifies: sizes and hashes match
    monkeypatch.setattr(files, "save_file", real_save)
    resumed = Trainer(Net(3), config(), run, progress=False)
    assert resumed.resume() and resumed.step == 4
    assert losses(resumed.fit(batches, step_fn)) == losses(_train(tmp_path / "full"))


def test_nan_rolls_back_to_the_last_finite_checkpoint(tmp_path):
    calls = {"n": 0}

    def nan_at_6(model, batch):
        calls["n"] += 1
        loss, logs = step_fn(model, batch)
        return (loss * float("nan") if calls["n"] == 6 else loss), logs

    trainer = Trainer(Net(), config(), tmp_path, progress=False)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 6; rolled back to .*step-0000004 \(step 4\)"):
        trainer.fit(batches, nan_at_6)
    saved = load_state(tmp_path / "checkpoints" / "train" / "step-0000004")
    assert trainer.step == 4 and saved["loss"] == trainer.last_loss and torch.isfinite(torch.tensor(saved["loss"]))
    for name, value in trainer.model.state_dict().items():  # the model in memory is the checkpoint's again
        assert torch.equal(value, saved["model"][name]), name


def test_exploded_weights_are_never_saved_as_a_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def explode_at_8(model, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # the loss is still finite, but the step leaves an inf weight, right before a save
            with torch.no_grad():
                model.body[0].bias[0] = float("inf")
            return torch.tensor(1.0, requires_grad=True), {}
        return step_fn(model, batch)

    trainer = Trainer(Net(), config(grad_clip=0.0), tmp_path, progress=False)
    with pytest.raises(FloatingPointError, match=r"a weight is not finite after step 8; rolled back to .*step-0000004"):
        trainer.fit(batches, explode_at_8)
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "train").iterdir()) == ["step-0000004"]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


HOLDER = textwrap.dedent("""
    import sys, time
    from sensorium.core.lock import acquire
    acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(60)
""")


def test_a_second_writer_is_refused_naming_the_pid_and_a_dead_holder_is_taken_over(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=rf"{tmp_path} is in use by PID {holder.pid} \("):
            acquire(tmp_path)
        with pytest.raises(RunLocked, match=f"PID {holder.pid}"):  # the trainer takes the same lock
            Trainer(Net(), config(), tmp_path, progress=False).fit(batches, step_fn)
        assert not (tmp_path / "metrics.jsonl").exists()  # the refused writer wrote nothing
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid  # left by the dead process
    with run_lock(tmp_path):  # taken over
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with run_lock(tmp_path):  # re-entrant in one process
            pass
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()
    release(tmp_path)  # releasing what is not held is harmless


def test_lock_is_released_when_training_fails(tmp_path):
    def boom(model, batch):
        raise ValueError("bad batch")

    with pytest.raises(ValueError):
        Trainer(Net(), config(), tmp_path, progress=False).fit(batches, boom)
    start = time.time()
    acquire(tmp_path)
    release(tmp_path)
    assert time.time() - start < 1
