"""Fault injection on a real training process (`sensorium train unified`, tiny, in subprocesses): kill -9 at random
points (one point per seed), SIGINT and SIGTERM saving at the next step boundary, a second writer on the same run
directory refused with the holder's PID, a stale lock of a killed process taken over, and after all of it the
run's losses and final weights are bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STEPS = 40
TINY = ["data.modalities=[image, text]", "data.n_train=32", "data.n_val=8", "data.n_test=8", "data.workers=1",
        "data.vocab_size=100", f"train.steps={STEPS}", "train.batch_size=8", "train.warmup=2", "train.eval_every=1000",
        "train.ckpt_every=4", "train.log_every=1", "model.trunk.depth=1", "model.trunk.dim=16",
        "model.trunk.mlp_hidden=32", "model.embed_dim=8", "threads=1",
        "model.tokenizers={image: {patch: 16}, text: {vocab: '', max_length: 16}}"]


def _start(run: Path, world: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sensorium", "-q", "train", "unified", str(run),
                             f"data.root={world}", *TINY], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 120.0) -> None:
    """Block until the run has logged `step` steps (metrics.jsonl grows by one line a step)."""
    deadline = time.time() + timeout
    while _steps_logged(run) < step:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before step {step}: {proc.stderr.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"no step {step} within {timeout}s")
        time.sleep(0.005)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights_sha(run: Path) -> str:
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    return manifest["files"]["tensors.safetensors"]["sha256"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (it also generates the World data the other runs share)."""
    root = tmp_path_factory.mktemp("faults-process")
    proc = _start(root / "reference", root / "world")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return root, _records(root / "reference"), _weights_sha(root / "reference")


def test_kill_sigint_sigterm_and_a_second_writer_then_identical_losses(reference):
    root, expected, weights = reference
    run, world = root / "chain", root / "world"
    # Interruptions in order at steps chosen by seeds: kill -9 (seed 0), SIGINT, kill -9 (seed 1), SIGTERM,
    # kill -9 (seed 2); each lands a random fraction of a step after the chosen step was logged.
    plan = [("kill", 0), ("SIGINT", None), ("kill", 1), ("SIGTERM", None), ("kill", 2)]
    done, at = 0, 0
    for what, seed in plan:
        rng = random.Random(seed if seed is not None else 100 + at)
        at = rng.randint(done + 1, done + 7)
        proc = _start(run, world)
        _wait_for_step(proc, run, at)
        if what == "SIGINT":  # while this writer holds the lock, a second one is refused
            proc.send_signal(signal.SIGSTOP)
            second = _start(run, world)
            _, err = second.communicate(timeout=120)
            proc.send_signal(signal.SIGCONT)
            assert second.returncode == 1
            assert f"is in use by PID {proc.pid}" in err and err.count("\n") == 1 and "Traceback" not in err
        time.sleep(rng.random() * 0.02)
        if what == "kill":
            proc.kill()
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            lock = json.loads((run / ".lock").read_text())
            assert lock["pid"] == proc.pid  # left behind by the killed process: the next run takes it over
        else:
            proc.send_signal(getattr(signal, what))
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 128 + getattr(signal, what), err
            assert f"stopped by {what} at step" in err and "run the same command again to resume" in err
            stopped = int(err.split(" at step ")[1].split(";")[0])
            assert (run / "checkpoints" / "unified" / f"step-{stopped:07d}").is_dir()  # saved where it stopped
            assert not (run / ".lock").exists()  # released cleanly
        assert not list((run / "checkpoints" / "unified").glob("*.tmp"))  or what == "kill"
        done = _steps_logged(run)
    proc = _start(run, world)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    got = _records(run)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))  # no step lost or duplicated
    assert got == expected  # the same losses, learning rates, gradient norms and final validation
    assert _weights_sha(run) == weights  # and bit-identical final weights
