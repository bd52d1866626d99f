"""bench/vlm_gpu.py end to end at test size on the CPU (--tiny): both phases finish and write their JSON, so the
real run on a GPU does not die on a code path no one ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~15 s on an idle CPU (a subprocess importing transformers); run with -m slow
def test_vlm_gpu_bench_runs_tiny(tmp_path):
    bench = ROOT / "bench" / "vlm_gpu.py"
    run = (f"import sys, runpy; sys.path.insert(0, {str(ROOT / 'tests')!r}); import _torchvision_shim; "
           f"sys.argv = [{str(bench)!r}, '--out', {str(tmp_path)!r}, '--tiny']; runpy.run_path(sys.argv[0], "
           "run_name='__main__')")  # under the tests' torchvision shim, as transformers imports torchvision
    proc = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    result = json.loads((tmp_path / "vlm_gpu.json").read_text())
    assert proc.returncode == 0, proc.stderr[-2000:] + json.dumps(result)[-2000:]
    throughput = result["generation_throughput"]
    assert throughput["status"] == "ok" and throughput["fp32_greedy_check"]["tokens_equal"]
    assert throughput["batch_32_tokens_per_s"]["hf_generate"] > 0
    vqa = result["world_vqa"]
    assert vqa["status"] == "ok" and set(vqa["by_family"]) == {"relational", "non-relational"}
    assert (tmp_path / "vqa_eval.json").is_file() and (tmp_path / "vqa_loss.png").is_file()
