"""DDP and FSDP2 on CPU (gloo, 2 processes): same loss and gradients as one process on the same global batch;
a rank that dies, hangs or never starts makes the others exit with a clear message within the timeout."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sensorium.train.distributed import compare, gradients

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5  # float32 on CPU: largest per-parameter ||g_2 - g_1|| / ||g_1||, and |loss_2 - loss_1|


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """torchrun the distributed entry on the tiny model (a later --model in `args` wins)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "sensorium.train.distributed", "--model", "tiny", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def _direct(world: int, args: dict[int, list[str]], timeout: float = 120) -> dict[int, tuple[int, str, float]]:
    """Start ranks as plain processes (no torchrun agent to tear them down): {rank: (rc, stderr, seconds)}."""
    port, start, procs = str(_free_port()), time.perf_counter(), {}
    for rank, extra in args.items():
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE=str(world), RANK=str(rank),
                   LOCAL_RANK=str(rank))
        procs[rank] = subprocess.Popen([sys.executable, "-m", "sensorium.train.distributed", "--model", "tiny",
                                        "--batch-size", "4", "--warmup", "3", "--target-s", "1", *extra],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out = {}
    for rank, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        out[rank] = (proc.returncode, err, time.perf_counter() - start)
    return out


def test_ddp_fsdp_and_local_loss_match_one_process(tmp_path):
    """2 ranks x 4 samples vs 1 process x 8 samples, float32: the same loss and full gradients."""
    done = _torchrun(2, "--check-out", str(tmp_path), "--checks", "ddp,fsdp,ddp-local", "--global-batch", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = gradients("tiny", "none", 8)
    finally:
        torch.set_num_threads(threads)
    from safetensors.torch import load_file

    for check in ("ddp", "fsdp", "ddp-local"):
        result = compare(reference, load_file(str(tmp_path / f"{check}.safetensors")))
        assert result["n_params"] == sum(1 for k in reference if k.startswith("grad/")) > 50
        assert result["max_rel_grad_err"] < TOLERANCE, (check, result)
        assert result["loss_abs_err"] < TOLERANCE, (check, result)


def test_dead_rank_makes_the_other_exit_with_a_message():
    results = _direct(2, {0: ["--timeout-s", "30"], 1: ["--timeout-s", "30", "--simulate-failure", "1:2"]})
    rc1, err1, _ = results[1]
    rc0, err0, seconds = results[0]
    assert rc1 == 3 and "simulated failure" in err1
    assert rc0 == 2 and "another rank probably died or hung" in err0, err0[-2000:]
    assert seconds < 60  # gloo sees the closed connection at once; well inside the 30 s timeout + start-up


def test_missing_rank_fails_rendezvous_within_the_timeout():
    results = _direct(2, {0: ["--timeout-s", "3"]})
    rc, err, seconds = results[0]
    assert rc == 2 and "could not reach all 2 ranks" in err and "--timeout-s" in err, err[-2000:]
    assert seconds < 45


@pytest.mark.slow
def test_hung_rank_times_out():
    results = _direct(2, {0: ["--timeout-s", "5"], 1: ["--timeout-s", "5", "--simulate-failure", "1:2:hang"]})
    rc0, err0, seconds = results[0]
    assert rc0 == 2 and "another rank probably died or hung" in err0, err0[-2000:]
    assert seconds < 50


@pytest.mark.slow
def test_torchrun_stops_the_other_rank_with_a_message():
    done = _torchrun(2, "--batch-size", "4", "--target-s", "2", "--simulate-failure", "1:2", "--timeout-s", "60")
    assert done.returncode != 0
    text = done.stdout + done.stderr
    # rank 0 either sees the closed connection itself or is stopped by torchrun first: a message either way
    assert "simulated failure" in text, text[-3000:]
    assert "stopped by the launcher" in text or "another rank probably died or hung" in text, text[-3000:]


@pytest.mark.slow
def test_distributed_scaling_bench_tiny(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "distributed_scaling.py"), "--tiny", "--out",
                           str(tmp_path), "--time-budget-s", "900"], capture_output=True, text=True, timeout=1000,
                          env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((tmp_path / "distributed_scaling.json").read_text())
    assert doc["status"] == "done" and all(r["passed"] for r in doc["equivalence"])
    assert {r["strategy"] for r in doc["throughput"] if r["status"] == "ok"} == {"ddp", "fsdp"}
    assert set(doc["scaling"]) == {"ddp", "fsdp"} and all(s["efficiency"] > 0 for s in doc["scaling"].values())


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_match_one_gpu(tmp_path):
    """NCCL, ViT-B-32, float32 with TF32 off: 2 GPUs x 8 samples vs 1 GPU x 16 samples."""
    args = ["--model", "ViT-B-32", "--checks", "ddp,fsdp,ddp-local", "--global-batch", "16"]
    for n in (1, 2):
        done = _torchrun(n, "--check-out", str(tmp_path / str(n)), *args, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.torch import load_file

    for check in ("ddp", "fsdp", "ddp-local"):
        result = compare(load_file(str(tmp_path / "1" / f"{check}.safetensors")),
                         load_file(str(tmp_path / "2" / f"{check}.safetensors")))
        print(check, result)
        assert result["max_rel_grad_err"] < 1e-4 and result["loss_abs_err"] < 1e-4, (check, result)


def _timing_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from sensorium.train.distributed import _fewest_steps
    from sensorium.train.fast import time_steps

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pause = 0.002 if rank == 0 else 0.02  # rank 0 estimates ten times more steps than rank 1

        def step() -> None:
            time.sleep(pause)
        timing = time_steps(step, "cpu", warmup=1, target_s=0.2, max_steps=100,
                            agree=lambda n: _fewest_steps(n, torch.device("cpu")))
        Path(f"{out}.{rank}").write_text(str(timing["steps"]))
    finally:
        dist.destroy_process_group()


def test_ranks_time_the_same_number_of_steps(tmp_path):
    """Ranks whose steps take different times still time the same number of steps (different counts would pair
    their collectives wrongly: a hang until the timeout)."""
    import torch.multiprocessing as mp

    mp.spawn(_timing_worker, args=(2, str(tmp_path / "pg"), str(tmp_path / "steps")), nprocs=2, join=True)
    steps = [int((tmp_path / f"steps.{r}").read_text()) for r in range(2)]
    assert steps[0] == steps[1] and 3 <= steps[0] <= 15, steps


@pytest.mark.parametrize("option", [("--fp8", "tensorwise"), ("--mlp-kernel", "cublaslt"), ("--mlp-kernel", "quack"),
                                    ("--attention", "cudnn+fa4"), ("--compile", "towers", "--compile-backend", "aot_eager")])
def test_block_kernels_train_under_fsdp2_and_ddp(tmp_path, option):
    """--fp8 converts the blocks before DDP/FSDP2 wraps them (FSDP2 shards Float8Linear's weights; converting
    afterwards mixes plain tensors with DTensors), and the epilogue MLP's and packed attention's custom ops see
    FSDP2's unsharded weights: both strategies train and agree (float8 emulated, custom ops as PyTorch math on
    CPU). Each tower compiled as its own graph (traced by aot_eager) trains under both as well."""
    if option[0] == "--fp8":
        pytest.importorskip("torchao.float8")
    losses = {}
    for strategy in ("ddp", "fsdp"):
        out = tmp_path / f"{strategy}.json"
        done = _torchrun(2, "--strategy", strategy, *option, "--no-bf16", "--batch-size", "4",
                         "--target-s", "0.5", "--max-steps", "3", "--json", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(out.read_text())
        assert result[option[0].removeprefix("--").replace("-", "_")] == option[1]
        losses[strategy] = result["final_loss"]
    assert losses["ddp"] == pytest.approx(losses["fsdp"], rel=1e-4), losses
