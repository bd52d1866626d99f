"""`sensorium train clip` on CPU from Sensorium World shards (one-object scenes at 32 px): it learns, a run killed
after a checkpoint resumes to bit-identical losses, weights and optimizer state, the model loads with
`sensorium.load` and embeds both modalities, exports to open_clip (checked with open_clip itself where installed),
and FSDP2/DDP under torchrun (2 gloo ranks) follow one process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sensorium
from sensorium.cli import main
from sensorium.core.files import load_state
from sensorium.data.endless import EndlessBatches
from sensorium.data.world import WorldConfig, write_world
from sensorium.train.captions import CaptionTokens, byte_tokenizer, text_tokenizer, train_caption_bpe
from sensorium.train.clip import build_model, load_recipe, run_clip
from sensorium.train.clip_models import CONFIG_DIR, model_names

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "clip" / "tiny.yaml")
ONE_OBJECT = WorldConfig(image_size=32, min_objects=1, max_objects=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """train: 256 samples in 4 shards; val: 32; small: 64 in 4 shards of 16; one: 48 in a single shard."""
    root = tmp_path_factory.mktemp("world")
    sets = {"train": ("train", 256, 64), "val": ("val", 32, 32), "small": ("train", 64, 16), "one": ("train", 48, 48)}
    out = {}
    for name, (split, n, shard) in sets.items():
        write_world(root / name, n, split, 0, ONE_OBJECT, ("image", "text"), shard_size=shard, progress=False)
        out[name] = root / name / f"{split}-*.tar"
    return out


def _run_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _val_pairs(world: dict[str, Path], n: int = 16) -> tuple[list, list[str]]:
    """The first n val images (PIL) and captions, read straight from the shard."""
    import io
    import tarfile

    from PIL import Image

    shard = sorted(world["val"].parent.glob("val-*.tar"))[0]
    images, captions = {}, {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            key, ext = member.name.rsplit(".", 1)
            data = tar.extractfile(member).read()
            if ext == "png":
                images[key] = Image.open(io.BytesIO(data)).convert("RGB")
            elif ext == "txt":
                captions[key] = data.decode()
    keys = sorted(images)[:n]
    return [images[k] for k in keys], [captions[k] for k in keys]


def test_train_clip_learns_and_its_model_loads_embeds_and_exports(world, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["-q", "train", "clip", str(run), "--config", TINY, f"data.train={world['train']}",
                 f"data.val={world['val']}", "train.steps=100"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["step"] == 100
    losses = [loss for _, loss in _losses(run)]
    assert [s for s, _ in _losses(run)] == list(range(10, 101, 10))
    assert losses[-1] < math.log(32) - 1.0 < losses[0], losses  # well below chance (ln 32 = 3.47) at the end
    assert summary["val"]["image_to_text_R@10"] > 60 and summary["val"]["text_to_image_R@10"] > 60  # chance ~31%
    assert (run / "loss_curve.png").stat().st_size > 1000 and (run / "tokenizer.json").is_file()

    model = sensorium.load(run)  # the run directory; its model/ is a sensorium-clip checkpoint
    assert type(model).__name__ == "DualEncoderEmbedder" and model.modalities == ["image", "text"] and model.dim == 32
    images, captions = _val_pairs(world)
    a, b = model.embed("image", images), model.embed("text", captions)
    assert torch.allclose(a.norm(dim=1), torch.ones(16), atol=1e-5) and torch.allclose(b.norm(dim=1), torch.ones(16))
    sim = a @ b.T
    off = (sim.sum() - sim.trace()) / (16 * 15)
    assert sim.diag().mean() > off + 0.3, (sim.diag().mean(), off)  # matched pairs far above mismatched ones
    assert (sim.argmax(dim=1) == torch.arange(16)).float().mean() >= 0.25  # top-1 of 16: chance is 1/16

    capsys.readouterr()
    assert main(["checkpoint", "info", str(run / "model")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "sensorium-clip" and info["text"]["max_length"] == 16 and info["text"]["pad_id"] == 0

    out = tmp_path / "open_clip"
    assert main(["checkpoint", "export", str(run / "model"), str(out), "--to", "open_clip"]) == 0
    text_cfg = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert (text_cfg["pool_type"], text_cfg["eos_id"], text_cfg["pad_id"]) == ("eos", 2, 0)
    assert Path(text_cfg["hf_tokenizer_name"]) == out.resolve() and (out / "tokenizer.json").is_file()
    back = sensorium.load(out)  # the open_clip layout, read back by Sensorium
    assert torch.equal(back.embed("image", images), a) and torch.equal(back.embed("text", captions), b)
    _check_with_open_clip(out, images, captions, a, b, model)


def _check_with_open_clip(out: Path, images, captions, a, b, model) -> None:
    """open_clip's own factory, transform and (transformers-backed) tokenizer on the exported directory (where the
    reference libraries are installed; tests/conftest.py has loaded the torchvision shim open_clip needs)."""
    try:
        import open_clip
        import transformers  # noqa: F401
    except ImportError:
        return
    oc, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    ids = open_clip.get_tokenizer(f"local-dir:{out}")(captions)
    assert torch.equal(ids, model.pretrained.text(captions)[0])
    with torch.no_grad():
        image = oc.eval().encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
        text = oc.encode_text(ids, normalize=True)
    assert (image - a).abs().max() < 1e-5 and (text - b).abs().max() < 1e-5


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_a_kill_is_bit_exact(world, tmp_path, workers):
    """Killed after step 6 (last checkpoint at step 4, one pass = 4 or 2x2 batches): resuming recomputes steps 5-9
    and ends with the uninterrupted run's losses, weights, optimizer state and data position, bit for bit."""
    recipe = load_recipe(TINY, [f"data.train={world['small']}", "train.steps=9", "train.batch_size=16",
                                "train.ckpt_every=4", "train.log_every=1", f"data.workers={workers}"])
    whole = run_clip(recipe, tmp_path / "whole", progress=False)
    killed = run_clip(recipe, tmp_path / "again", progress=False, stop_after=6)
    assert (killed["status"], killed["step"]) == ("interrupted", 6)
    resumed = run_clip(recipe, tmp_path / "again", progress=False)
    assert (resumed["status"], resumed["resumed_from"]) == ("done", 4)
    assert _losses(tmp_path / "again") == _losses(tmp_path / "whole") and len(_losses(tmp_path / "whole")) == 9
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("whole", "again"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (load_state(tmp_path / d / "checkpoints" / "clip" / "step-0000009") for d in ("whole", "again"))
    moments = [(k, m) for k, v in sa["optimizer"]["state"].items() for m in v]
    assert moments and all(torch.equal(sa["optimizer"]["state"][k][m], sb["optimizer"]["state"][k][m])
                           for k, m in moments)
    assert sa["data"] == sb["data"] and whole["loss"] == resumed["loss"]
    with pytest.raises(ValueError, match="another recipe.*train.batch_size"):
        run_clip(load_recipe(TINY, [f"data.train={world['small']}", "train.steps=12", "train.batch_size=8",
                                    f"data.workers={workers}"]), tmp_path / "again", progress=False)


def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes_exactly(world, tmp_path):
    """A real `sensorium train clip` process gets SIGINT mid-run: it checkpoints the step it is at, exits 130 naming
    the checkpoint, and the same command finishes with the losses and weights of an uninterrupted run."""
    import signal
    import time

    overrides = [f"data.train={world['small']}", "train.steps=150", "train.batch_size=8", "train.log_every=1",
                 "train.ckpt_every=1000", "tokenizer.kind=bytes"]
    command = [sys.executable, "-m", "sensorium", "-q", "train", "clip", str(tmp_path / "run"), "--config", TINY,
               *overrides]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_run_env())
    metrics, deadline = tmp_path / "run" / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    stopped = len(_losses(tmp_path / "run"))
    assert f"stopped by SIGINT at step {stopped}" in err and 5 <= stopped < 150
    assert (tmp_path / "run" / "checkpoints" / "clip" / f"step-{stopped:07d}").is_dir()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_run_env(), check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    run_clip(load_recipe(TINY, overrides), tmp_path / "whole", progress=False)
    assert _losses(tmp_path / "run") == _losses(tmp_path / "whole")
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("run", "whole"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _torchrun(run: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "sensorium",
           "-q", "train", "clip", str(run), "--config", TINY, *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_run_env(), check=False)


@pytest.mark.parametrize("strategy", ["fsdp", pytest.param("ddp", marks=pytest.mark.slow)])
def test_torchrun_matches_one_process_and_resumes(world, tmp_path, strategy):
    """2 ranks x 4 samples against 1 process x 8 from one shard (each rank keeps every other sample, so each step's
    global batch is the same 8 samples): the same losses at every step, float32, and the same weights. The
    distributed run is stopped by its time budget after step 1 and resumed by a second launch."""
    common = [f"data.train={world['one']}", "train.steps=6", "train.log_every=1", "train.ckpt_every=4",
              "tokenizer.kind=bytes"]
    run_clip(load_recipe(TINY, [*common, "train.batch_size=8"]), tmp_path / "one", progress=False)
    distributed = tmp_path / strategy
    first = _torchrun(distributed, *common, "train.batch_size=4", f"strategy={strategy}", "train.time_budget_s=0.001")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((distributed / "summary.json").read_text())["status"] == "stopped"
    assert [s for s, _ in _losses(distributed)] == [1]
    second = _torchrun(distributed, *common, "train.batch_size=4", f"strategy={strategy}")
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((distributed / "summary.json").read_text())
    assert (summary["status"], summary["resumed_from"], summary["world"]) == ("done", 1, 2)
    ours, ref = _losses(distributed), _losses(tmp_path / "one")
    assert [s for s, _ in ours] == [s for s, _ in ref] == list(range(1, 7))
    assert [loss for _, loss in ours] == pytest.approx([loss for _, loss in ref], rel=1e-5, abs=1e-6)
    a, b = (load_file(d / "model" / "model.safetensors") for d in (tmp_path / "one", distributed))
    for key in a:  # AdamW divides by sqrt(v): ~1e-7 gradient differences grow to ~1e-4 of a tensor's scale
        assert (a[key] - b[key]).abs().max() <= 1e-3 * a[key].abs().max() + 1e-7, key


def test_endless_batches_visit_every_sample_once_per_pass_and_resume_with_workers(world):
    """Two workers over 4 shards of 16: the first 8 batches of 8 (one pass of each worker) hold all 64 samples once;
    batches resumed after k of them (rotated workers) are the ones that followed."""
    from torch.utils.data import DataLoader

    def batches(dataset, n):
        loader = iter(DataLoader(dataset, batch_size=None, num_workers=2))
        return [next(loader) for _ in range(n)]

    first = batches(EndlessBatches(world["small"], 8, ("image", "text"), seed=3, workers=2), 12)
    keys = [k for b in first[:8] for k in b["__key__"]]
    assert len(keys) == 64 and len(set(keys)) == 64
    assert [b["__role__"] for b in first] == [0, 1] * 6
    for k in (3, 8):
        again = EndlessBatches(world["small"], 8, ("image", "text"), seed=3, workers=2)
        again.load_state({b["__role__"]: b["__state__"] for b in first[:k]}, k)
        assert [b["__key__"] for b in batches(again, 4)] == [b["__key__"] for b in first[k:k + 4]]
    with pytest.raises(ValueError, match="no complete batch"):
        batches(EndlessBatches(world["small"], 40, ("image", "text"), workers=2), 1)


def test_caption_tokenizers_feed_and_model_agree():
    """The workers' CaptionTokens and the saved model's TextTokenizer give the same ids: <start> text <end>, padded
    with <pad>, truncated with <end> kept; the byte tokenizer maps each UTF-8 byte to one id."""
    tok = train_caption_bpe(["a large red circle at the top", "a small blue square on the left"] * 20, 300)
    texts = ["A  large RED circle", "a small blue square on the left " * 6, "é"]
    feed, (model, mask) = CaptionTokens(tok, 10)(texts), text_tokenizer(tok, 10)(texts)
    assert torch.equal(feed, model) and feed.shape == (3, 10)
    assert feed[0, 0] == 1 and feed[1, -1] == 2 and feed[1].ne(0).all()  # long text: cut, <end> kept
    assert feed[0].tolist().index(2) == mask[0].sum() - 1 and feed[0, mask[0].sum():].eq(0).all()
    assert tok.decode(feed[0].tolist()).strip() == "a large red circle"  # lower-cased, spaces collapsed
    raw = byte_tokenizer()
    assert raw.get_vocab_size() == 259 and len(raw.encode("é").ids) == 2 + 1 + 2  # <start> space-prefix é(2) <end>


def test_recipes_and_their_errors():
    """Every configs/clip file is a valid recipe; mistakes get one clear line."""
    names = model_names()
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "tiny", "ViT-B-16-fast"} <= set(names)
    for name in names:
        recipe = load_recipe(CONFIG_DIR / f"{name}.yaml")
        assert recipe.model and recipe.train.steps > 0
    fast = load_recipe(CONFIG_DIR / "ViT-B-16-fast.yaml").fast
    assert (fast.step_graph, fast.tower_streams, fast.mlp_kernel, fast.attention) == (True, True, "quack", "cudnn+fa4")
    assert load_recipe(TINY, ["train.lr=5e-4"]).train.lr == 5e-4  # YAML reads 5e-4 as text
    for overrides, message in ((["fast.lr=0.1"], "set train.lr"), (["tokenizer.kind=words"], "tokenizer.kind"),
                               (["model="], "names no model"), (["strategy=zero3"], "strategy"),
                               (["train.batch_size=10", "train.accum=3"], "does not split"),
                               (["train.lr=fast"], "expected a number")):
        with pytest.raises(ValueError, match=message):
            load_recipe(TINY, overrides)
    with pytest.raises(ValueError, match="unknown model 'ViT-Q-99'; known: .*ViT-B-32"):
        load_recipe(TINY, ["model=ViT-Q-99"])


@pytest.mark.gpu
def test_cuda_step_graph_run_follows_the_schedule_and_resumes(world, tmp_path):
    """On a GPU: the step captured as one CUDA graph (learning rate a device tensor, updated in place each step) with
    the text tower on a second stream, bf16; killed after step 6 and resumed from step 4 (a new graph is captured),
    it ends where the uninterrupted run does (GPU kernels may differ in the last bits: rel 1e-3)."""
    overrides = [f"data.train={world['small']}", "device=cuda", "fast.bf16=true", "fast.step_graph=true",
                 "fast.tower_streams=true", "train.steps=12", "train.batch_size=16", "train.ckpt_every=4",
                 "train.log_every=1", "train.warmup=3", "tokenizer.kind=bytes"]
    recipe = load_recipe(TINY, overrides)
    whole = run_clip(recipe, tmp_path / "whole", progress=False)
    run_clip(recipe, tmp_path / "again", progress=False, stop_after=6)
    resumed = run_clip(recipe, tmp_path / "again", progress=False)
    assert resumed["resumed_from"] == 4 and whole["status"] == resumed["status"] == "done"
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records][:3] == pytest.approx([2e-3 / 3, 4e-3 / 3, 2e-3])  # warm-up, then cosine
    assert records[-1]["lr"] < records[3]["lr"]
    ours, ref = _losses(tmp_path / "again"), _losses(tmp_path / "whole")
    assert [loss for _, loss in ours] == pytest.approx([loss for _, loss in ref], rel=1e-3)
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("whole", "again"))
    before = build_model(recipe, "cpu", byte_tokenizer()).state_dict()
    assert any(not torch.equal(a[k], before[k]) for k in a)  # the captured optimizer step did update the weights
    for key in a:
        assert (a[key] - b[key]).abs().max() <= 1e-2 * a[key].abs().max() + 1e-6, key
