"""Data-parallel scaling of contrastive training with torchrun: samples/s on 1 and N GPUs with DDP and FSDP2
(weak scaling: the same batch per GPU), scaling efficiency = N-GPU samples/s / (N x 1-GPU samples/s), and
the equivalence check: loss and gradients of one float32 step on the same global batch, N processes
against one process (tolerance on the largest per-parameter relative error ||g_N - g_1|| / ||g_1||).

    PYTHONPATH=src python3 bench/distributed_scaling.py --out OUT                # 2 GPUs, ViT-B-16, compiled
    PYTHONPATH=src python3 bench/distributed_scaling.py --tiny --out /tmp/ds    # CPU, gloo, tiny model

OUT/distributed_scaling.json is rewritten after every launch; launches that would not fit in what is left
of --time-budget-s are recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

TOLERANCE = {"cpu": 1e-5, "cuda": 1e-4}  # float32, TF32 off; reduction order differs between 1 and N ranks


def launch(nproc: int, args: list[str], timeout: float, tiny: bool) -> tuple[int, str]:
    """Run `torchrun --standalone --nproc-per-node nproc -m sensorium.train.distributed ARGS`; (rc, output tail)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    if tiny:
        env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "sensorium.train.distributed", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1), env=env)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        return 124, f"timed out after {timeout:.0f}s\n{out[-3000:]}"
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "Warning" not in ln and "warn(" not in ln]
    return done.returncode, "\n".join(lines[-40:])


def main(argv: list[str] | None = None) -> int:
    """Equivalence check, then throughput on 1 and N processes per strategy; JSON to --out."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU with gloo (plumbing check)")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--model", default=None, help="default ViT-B-16 (tiny with --tiny)")
    p.add_argument("--strategies", default="ddp,fsdp")
    p.add_argument("--batch-size", type=int, default=None, help="per GPU (default 256; 4 with --tiny)")
    p.add_argument("--compile", default=None, help="none | blocks | model (default blocks; none with --tiny)")
    p.add_argument("--checks", default="ddp,fsdp,ddp-local", help="equivalence checks: strategy[-local]")
    p.add_argument("--global-batch", type=int, default=None, help="equivalence batch (default 32; 8 --tiny)")
    p.add_argument("--target-s", type=float, default=None, help="timed seconds per launch (default 5)")
    p.add_argument("--time-budget-s", type=float, default=540.0)
    p.add_argument("--timeout-s", type=float, default=300.0, help="collective timeout inside each launch")
    args = p.parse_args(argv)
    import torch

    tiny = args.tiny
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    model = args.model or ("tiny" if tiny else "ViT-B-16")
    batch = args.batch_size or (4 if tiny else 256)
    compile_mode = args.compile or ("none" if tiny else "blocks")
    target_s = args.target_s or (0.3 if tiny else 5.0)
    global_batch = args.global_batch or (8 if tiny else 32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + args.time_budget_s
    doc: dict[str, Any] = {
        "bench": "distributed_scaling", "status": "running", "command": " ".join(sys.argv), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "gpus": torch.cuda.device_count() if device == "cuda" else 0, "backend": "nccl" if device == "cuda" else "gloo",
        "settings": {"model": model, "batch_per_rank": batch, "nproc": args.nproc, "compile": compile_mode,
                     "bf16": True, "scaling": "weak (same batch per rank)", "target_s": target_s,
                     "equivalence": {"global_batch": global_batch, "dtype": "float32, TF32 off",
                                     "tolerance_max_rel_grad_err": TOLERANCE[device],
                                     "tolerance_loss_abs_err": TOLERANCE[device]}},
        "equivalence": [], "throughput": [], "scaling": {}}

    def save() -> None:
        doc["elapsed_s"] = time.perf_counter() - start
        (out / "distributed_scaling.json").write_text(json.dumps(doc, indent=1) + "\n")

    def run(nproc: int, extra: list[str], what: str, need_s: float) -> tuple[int, str]:
        left = deadline - time.perf_counter()
        if left < need_s:
            return -1, f"skipped: {left:.0f}s left of the time budget, {what} needs ~{need_s:.0f}s"
        print(f"[{time.perf_counter() - start:6.1f}s] {what} on {nproc} process(es)", flush=True)
        return launch(nproc, ["--model", model, "--timeout-s", str(args.timeout_s), *extra], left, tiny)

    from safetensors.torch import load_file

    from sensorium.train.distributed import compare

    check_dirs = {n: out / f"grads-{n}proc" for n in (1, args.nproc)}
    rcs = {n: run(n, ["--check-out", str(d), "--checks", args.checks, "--global-batch", str(global_batch)],
                  "equivalence", 5 if tiny else 60) for n, d in check_dirs.items()}
    for check in args.checks.split(","):
        rec: dict[str, Any] = {"check": check, "nproc": args.nproc}
        files = {n: d / f"{check}.safetensors" for n, d in check_dirs.items()}
        if all(f.is_file() for f in files.values()):
            rec.update(compare(load_file(str(files[1])), load_file(str(files[args.nproc]))))
            tol = TOLERANCE[device]
            rec["passed"] = rec["max_rel_grad_err"] <= tol and rec["loss_abs_err"] <= tol * max(1.0, rec["loss_ref"])
        else:
            rec.update(passed=False, error={n: rc[1][-2000:] for n, rc in rcs.items() if rc[0] != 0})
        doc["equivalence"].append(rec)
    save()
    for strategy in args.strategies.split(","):
        for n in (1, args.nproc):
            json_path = out / f"throughput-{strategy}-{n}proc.json"
            rc, tail = run(n, ["--strategy", strategy, "--batch-size", str(batch), "--compile", compile_mode,
                               "--target-s", str(target_s), "--json", str(json_path)],
                           f"throughput {strategy}", 5 if tiny else 90)
            rec = json.loads(json_path.read_text()) if rc == 0 and json_path.is_file() else \
                {"strategy": strategy, "world": n, "status": "skipped" if rc == -1 else "error", "log": tail[-3000:]}
            rec.setdefault("status", "ok")
            doc["throughput"].append(rec)
            save()
        ok = {r["world"]: r for r in doc["throughput"] if r["strategy"] == strategy and r["status"] == "ok"}
        if 1 in ok and args.nproc in ok:
            eff = ok[args.nproc]["samples_per_s"] / (args.nproc * ok[1]["samples_per_s"])
            doc["scaling"][strategy] = {"samples_per_s_1": ok[1]["samples_per_s"],
                                        f"samples_per_s_{args.nproc}": ok[args.nproc]["samples_per_s"],
                                        "efficiency": eff, "meets_90_percent": eff >= 0.9}
        save()
    doc["status"] = "done"
    save()
    print(json.dumps({"equivalence": [{k: r.get(k) for k in ("check", "passed", "max_rel_grad_err", "loss_abs_err")}
                                      for r in doc["equivalence"]], "scaling": doc["scaling"]}, indent=1))
    return 0 if all(r.get("passed") for r in doc["equivalence"]) else 1


if __name__ == "__main__":
    sys.exit(main())
