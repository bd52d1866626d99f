"""The fast contrastive path: presets, the accelerate patch, the training step, OOM advice, and the
throughput bench's --tiny run (the plumbing the one-shot GPU run depends on)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fast import tiny_losses

from sensorium.models.dual_encoder import DualEncoder
from sensorium.nn import KVCache, Transformer, TransformerConfig
from sensorium.train.fast import (ContrastiveStep, FastConfig, OutOfMemoryAdvice, accelerate, clip_config,
                                  count_flops, memory_advice, synthetic_batch, time_steps)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny shapes: one thread (two threads on shared cores stall on OpenMP barriers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cuda_step(cfg, fast: FastConfig, batch: int):
    """A DualEncoder built on CUDA from seed 0, its ContrastiveStep under `fast`, and a synthetic batch."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = DualEncoder(cfg)
    return model, ContrastiveStep(model, fast), *synthetic_batch(cfg, batch, "cuda")


def test_presets_have_open_clip_dimensions():
    cfg = clip_config("ViT-B-16")
    v, t = cfg.vision, cfg.text
    assert (v.image_size, v.patch_size, v.transformer.dim, v.transformer.depth, v.transformer.n_heads) == \
        (224, 16, 768, 12, 12)
    assert (t.context_length, t.vocab_size, t.transformer.dim, t.transformer.depth, t.transformer.n_heads) == \
        (77, 49408, 512, 12, 8)
    assert v.proj_dim == t.proj_dim == 512 and v.transformer.fused_qkv and t.causal
    assert clip_config("ViT-B-32").vision.patch_size == 32
    large = clip_config("ViT-L-14")  # open_clip: heads = width / 64 in the vision tower
    assert (large.vision.patch_size, large.vision.transformer.dim, large.vision.transformer.depth,
            large.vision.transformer.n_heads, large.text.transformer.dim, large.vision.proj_dim) == \
        (14, 1024, 24, 16, 768, 768)
    with pytest.raises(ValueError, match="unknown model"):
        clip_config("ViT-X")


def test_compile_and_checkpoint_variants_give_the_same_losses():
    """Float32: regional compile (traced by aot_eager), whole-model compile and activation checkpointing
    change how the step runs, not what it computes."""
    reference = tiny_losses(FastConfig(bf16=False))
    for cfg in (FastConfig(bf16=False, checkpoint=True),
                FastConfig(bf16=False, compile="blocks", compile_backend="aot_eager", checkpoint=True),
                FastConfig(bf16=False, compile="model", compile_backend="aot_eager"),
                FastConfig(bf16=False, compile="towers", compile_backend="aot_eager", tower_streams=True),
                FastConfig(bf16=False, compile="step", compile_backend="aot_eager")):
        assert tiny_losses(cfg) == pytest.approx(reference, rel=1e-5, abs=1e-6), cfg
    assert reference[1] < reference[0]


def test_regional_compile_reuses_one_graph_for_all_layers():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    tiny_losses(FastConfig(bf16=False, compile="blocks", compile_backend="eager"))
    assert counters["stats"]["unique_graphs"] == 2  # one per tower shape, not one per layer
    assert not counters["graph_break"]
    torch._dynamo.reset()


def test_bf16_residual_stream_under_autocast():
    torch.manual_seed(0)
    model = DualEncoder(clip_config("tiny"))
    seen = []
    model.text.transformer.blocks[1].register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    step = ContrastiveStep(model, FastConfig(bf16=True))
    pixels, ids = synthetic_batch(model.cfg, 4, "cpu")
    assert torch.isfinite(step(pixels, ids))
    assert seen == [(torch.bfloat16, torch.bfloat16)]
    seen.clear()
    model.eval()
    model.encode_text(ids)  # outside autocast the patch leaves float32 alone
    assert seen == [(torch.float32, torch.float32)]


def test_patch_keeps_state_dict_and_kv_cache_path():
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=16, depth=2, n_heads=2, mlp_hidden=32, fused_qkv=True)
    plain, patched = Transformer(cfg), Transformer(cfg)
    patched.load_state_dict(plain.state_dict())
    accelerate(patched, FastConfig(checkpoint=True))
    assert list(patched.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 5, 16, requires_grad=True)
    torch.testing.assert_close(patched(x, is_causal=True), plain(x, is_causal=True))
    c1, c2 = KVCache(), KVCache()  # generation with a cache takes the original path
    torch.testing.assert_close(patched(x[:, :3], is_causal=True, cache=c1), plain(x[:, :3], is_causal=True, cache=c2))
    torch.testing.assert_close(patched(x[:, 3:], is_causal=True, cache=c1), plain(x[:, 3:], is_causal=True, cache=c2))


def test_gradient_accumulation_averages_micro_batch_losses():
    torch.manual_seed(0)
    a = DualEncoder(clip_config("tiny"))
    b = DualEncoder(clip_config("tiny"))
    b.load_state_dict(a.state_dict())
    pixels, ids = synthetic_batch(a.cfg, 8, "cpu")
    loss = ContrastiveStep(a, FastConfig(bf16=False, accum=2))(pixels, ids)
    manual = ContrastiveStep(b, FastConfig(bf16=False))
    halves = [manual.forward_loss(p, t) for p, t in zip(pixels.chunk(2), ids.chunk(2))]
    (sum(halves) / 2).backward()
    manual.optimizer.step()
    assert loss.item() == pytest.approx((sum(halves) / 2).item(), rel=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="accum=3"):
        ContrastiveStep(a, FastConfig(accum=3))(pixels, ids)


def test_siglip_step_runs():
    losses = tiny_losses(FastConfig(bf16=False, loss="siglip"), steps=3)
    assert all(map(lambda v: v == v, losses)) and losses[-1] < losses[0]


def test_out_of_memory_names_the_options_that_lower_memory(monkeypatch):
    torch.manual_seed(0)
    model = DualEncoder(clip_config("tiny"))
    step = ContrastiveStep(model, FastConfig(bf16=False))

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(step, "forward_loss", oom)
    pixels, ids = synthetic_batch(model.cfg, 4, "cpu")
    with pytest.raises(OutOfMemoryAdvice) as info:
        step(pixels, ids)
    text = str(info.value)
    for option in ("--batch-size", "--accum", "--checkpoint", "--local-loss", "fsdp", "Tried to allocate 2.00 GiB"):
        assert option in text
    assert isinstance(info.value, torch.OutOfMemoryError)  # still caught by `except torch.OutOfMemoryError`
    with pytest.raises(ValueError):  # other errors pass through unchanged
        with memory_advice("x"):
            raise ValueError("not memory")


def test_flop_counter_and_timer():
    lin = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(3, 8)
    assert count_flops(lambda: lin(x)) == 2 * 3 * 8 * 4
    t = time_steps(lambda: lin(x), "cpu", warmup=1, target_s=0.01, max_steps=5)
    assert 3 <= t["steps"] <= 5 and t["step_s"] > 0


def _bench(*args: str, timeout: int = 300) -> dict:
    out = Path(args[args.index("--out") + 1])
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--tiny", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "train_throughput.json").read_text())


def test_throughput_bench_tiny_runs_every_row(tmp_path):
    """Every row of the GPU plan, at tiny size on CPU: open_clip rows run where it is importable and are
    recorded as skipped where not; no row may fail."""
    doc = _bench("--out", str(tmp_path), "--world-shards", "48")
    assert doc["status"] == "done" and doc["device"]["type"] == "cpu"
    rows = {r["name"]: r for r in doc["rows"]}
    assert len(rows) == 21  # including the epilogue-MLP (cuBLASLt, quack), FA4, step-graph and default-install rows
    for name, row in rows.items():
        assert row["status"] in ("ok", "skipped"), (name, row.get("error"), row.get("traceback"))
        if row["impl"] == "sensorium":
            assert row["status"] == "ok", name
    train = rows["train/sensorium/tiny/compile"]
    assert train["samples_per_s"] > 0 and train["flops_per_sample"] > 0 and 0 < train["mfu"] < 1
    assert train["dynamo"] == {"unique_graphs": 2, "graph_breaks": 0}
    graphed = rows["train/sensorium/tiny/compile-towers+quack-mlp+cudnn-fa4+step-graph+streams+cdt"]
    assert graphed["note"] == "step_graph off: no CUDA device" and graphed["inductor"]
    full = rows["train/sensorium/tiny/compile-towers+quack-mlp+cudnn-fa4+step-graph+streams+full-last-block"]
    assert full["tower_config"] == {"prune_last_block": False} and full["flops_per_sample"] > graphed["flops_per_sample"]
    assert rows["embed/sensorium/tiny/eager"]["images_per_s"] > 0
    assert "sensorium_samples_per_s" in doc["summary"]["tiny"]
    real = rows["train/sensorium/tiny/compile-model+shards"]  # fed from World shards written by the bench
    assert real["samples_per_s"] > 0 and real["loader_samples_per_s"] > 0 and "world-shards" in real["data"]
    assert 0 < doc["summary"]["tiny"]["shards_fraction_of_synthetic"]
    assert (tmp_path / "train_throughput.md").is_file()


def test_byte_tokens_and_shard_feed(tmp_path):
    from sensorium.data.world import WorldConfig, write_world
    from sensorium.interop.preprocess import OPENAI_MEAN
    from sensorium.train.shard_feed import ShardFeed, byte_tokens

    ids = byte_tokens(["ab", "é" * 40], context=16, vocab_size=1000)
    assert ids[0, :4].tolist() == [998, 98, 99, 999] and ids[0, 4:].eq(0).all()
    assert ids[1].argmax() == 15 and ids[1, 15] == 999  # cut to the context, the end token kept
    assert ids[1, 1:3].tolist() == [0xC3 + 1, 0xA9 + 1]  # UTF-8 bytes of é, shifted by one
    assert byte_tokens([""], 8, 1000)[0].tolist() == [998, 999, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="259"):
        byte_tokens(["x"], 8, 100)
    write_world(tmp_path, 12, "train", 0, WorldConfig(image_size=24), ("image", "text"), shard_size=4, progress=False)
    cfg = clip_config("tiny")
    for thread in (True, False):  # a background thread (the default) or inline
        feed = ShardFeed(tmp_path, cfg, batch_size=4, device="cpu", workers=0, thread=thread)
        for _ in range(4):  # past the end of the first epoch
            pixels, ids = next(feed)
            assert pixels.shape == (4, 3, 32, 32) and ids.shape == (4, 16)  # resized to the tower's 32 px
        feed.close()
    background = pixels[:, :, 0, 0]  # a corner pixel, normalised with CLIP mean/std
    assert background.abs().max() < 3 and not torch.allclose(background, -torch.tensor(OPENAI_MEAN) / 0.27)
    feed = ShardFeed(tmp_path, cfg, batch_size=64, device="cpu", workers=0, thread=True)  # > the 12 samples there
    for _ in range(2):  # raised by the thread, surfaced here, and again on a later call (no hang)
        with pytest.raises(ValueError, match="no complete batch"):
            next(feed)


def test_throughput_bench_skips_rows_past_the_time_budget(tmp_path):
    doc = _bench("--out", str(tmp_path), "--time-budget-s", "0")
    assert doc["rows"] and all(r["status"] == "skipped" and "time budget" in r["reason"] for r in doc["rows"])


@pytest.mark.gpu
def test_cuda_compiled_step_matches_eager_and_oom_gives_advice():
    """bf16 on CUDA: the regionally compiled step follows the eager one; a batch far too large for the GPU
    ends in OutOfMemoryAdvice, and the GPU is usable afterwards."""
    cfg = clip_config("ViT-B-32")
    losses = {}
    for mode in ("none", "blocks"):
        _model, step, pixels, ids = _cuda_step(cfg, FastConfig(compile=mode), 32)
        losses[mode] = [step(pixels, ids).item() for _ in range(3)]
    assert losses["blocks"] == pytest.approx(losses["none"], rel=5e-2)
    pixels, ids = synthetic_batch(cfg, 16384, "cuda")
    with pytest.raises(OutOfMemoryAdvice, match="--accum"):
        step(pixels, ids)
    del pixels, ids
    torch.cuda.empty_cache()
    assert torch.isfinite(step(*synthetic_batch(cfg, 8, "cuda")))


@pytest.mark.gpu
def test_cuda_pruned_last_block_trains_like_the_full_one():
    """ViT-B-16 in bf16 on the fastest step there is here (quack MLP and cuDNN/FA4 attention where installed,
    the step in a CUDA graph, the text tower on its own stream): the last block pruned to the pooled rows gives
    the full block's losses over four steps (within 2%) and the same parameters after them."""
    from sensorium.nn.flash_qkv import fa4_available
    from sensorium.nn.fused_mlp import quack_available

    fast = FastConfig(step_graph=True, tower_streams=True, mlp_kernel="quack" if quack_available("cuda") else
                      "inductor", attention="cudnn+fa4" if fa4_available("cuda") else "auto")
    batches = [synthetic_batch(clip_config("ViT-B-16"), 32, "cuda", seed=s) for s in range(4)]
    results = {}
    for prune in (True, False):
        cfg = clip_config("ViT-B-16")
        cfg.vision.prune_last_block = cfg.text.prune_last_block = prune
        model, step, _pixels, _ids = _cuda_step(cfg, fast, 32)
        results[prune] = ([step(p, t).item() for p, t in batches],
                          torch.cat([p.detach().flatten().float() for p in model.parameters()]))
    assert results[True][0] == pytest.approx(results[False][0], rel=2e-2), (fast, results[True][0], results[False][0])
    drift = (results[True][1] - results[False][1]).norm() / results[False][1].norm()
    assert drift < 1e-2, drift


def test_step_graph_and_tower_streams_refuse_what_cannot_work():
    """step_graph needs one CUDA device and no CUDA graphs of its own from torch.compile; tower_streams needs
    the towers called from eager code, on one GPU."""
    model = DualEncoder(clip_config("tiny"))
    with pytest.raises(ValueError, match="step_graph=True captures a CUDA graph; the model is on cpu"):
        ContrastiveStep(model, FastConfig(step_graph=True))
    with pytest.raises(ValueError, match="compile='towers'"):
        ContrastiveStep(model, FastConfig(tower_streams=True, compile="model"))
    with pytest.raises(ValueError, match="tower_streams=True is for one GPU"):
        ContrastiveStep(model, FastConfig(tower_streams=True), wrap=lambda pair: pair)


@pytest.mark.gpu
@pytest.mark.parametrize("fast", [FastConfig(step_graph=True), FastConfig(step_graph=True, tower_streams=True),
                                  FastConfig(compile="towers", step_graph=True, tower_streams=True)],
                         ids=["graph", "graph+streams", "towers+graph+streams"])
def test_cuda_step_graph_follows_the_eager_step(fast):
    """The step captured in one CUDA graph (optionally with the text tower on its own stream) trains like the
    eager step: the same losses over six steps on changing batches (bf16, so within 2%), the same
    parameters after them, and a batch of another shape is refused with a clear error. Another thread copies to
    the GPU all along, as a data feeder does (it invalidated the capture under the default capture mode)."""
    import threading

    cfg = clip_config("tiny")
    batches = [synthetic_batch(cfg, 16, "cuda", seed=s) for s in range(6)]
    results, stop = {}, threading.Event()

    def feeder():  # a data feeder's copies on its own stream (ShardFeed's thread), concurrent with the capture
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            while not stop.is_set():
                batch = torch.randn(256, 256).to("cuda", non_blocking=True).float().div_(255)
                event = torch.cuda.Event()
                event.record(side)
                event.synchronize()
                del batch

    thread = threading.Thread(target=feeder, daemon=True)
    thread.start()
    try:
        for name, config in (("eager", FastConfig()), ("graph", fast)):
            model, step, _pixels, _ids = _cuda_step(cfg, config, 16)
            results[name] = ([step(p, t).item() for p, t in batches], torch.cat([p.detach().flatten().float()
                                                                                   for p in model.parameters()]))
    finally:
        stop.set()
        thread.join()
    assert results["graph"][0] == pytest.approx(results["eager"][0], rel=2e-2)
    assert results["graph"][0][-1] != results["graph"][0][2]  # replays see new batches, not the captured one
    drift = (results["graph"][1] - results["eager"][1]).norm() / results["eager"][1].norm()
    assert drift < 1e-2, drift
    with pytest.raises(ValueError, match="replays a graph captured for pixels"):
        step(*synthetic_batch(cfg, 8, "cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("compile_mode", ["none", "model"])
def test_cuda_step_never_waits_for_the_gpu(compile_mode):
    """After warm-up, a whole training step (towers, loss, backward, fused AdamW) runs with CUDA's sync debug
    mode set to error: nothing in it copies to the host or otherwise blocks on the device."""
    cfg = clip_config("tiny")
    with torch.device("cuda"):
        model = DualEncoder(cfg)
    step = ContrastiveStep(model, FastConfig(compile=compile_mode))
    pixels, ids = synthetic_batch(cfg, 16, "cuda")
    for _ in range(3):
        step(pixels, ids)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step(pixels, ids)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


def test_float8_blocks_swap_only_block_linears_and_train():
    """fp8=tensorwise swaps the transformer blocks' nn.Linear layers for torchao's Float8Linear (emulated on
    CPU), keeps the state-dict keys and the projection heads, and the step still learns the batch; an unknown
    recipe is named."""
    pytest.importorskip("torchao.float8")
    torch.manual_seed(0)
    model = DualEncoder(clip_config("tiny"))
    keys = set(model.state_dict())
    step = ContrastiveStep(model, FastConfig(bf16=False, fp8="tensorwise"))
    swapped = {name for name, m in model.named_modules() if type(m).__name__ == "Float8Linear"}
    assert len(swapped) == 16 and all(".blocks." in name for name in swapped), sorted(swapped)
    assert set(model.state_dict()) == keys
    pixels, ids = synthetic_batch(model.cfg, 8, "cpu")
    losses = [step(pixels, ids).item() for _ in range(3)]
    assert losses[0] == pytest.approx(tiny_losses(FastConfig(bf16=False), steps=1)[0], rel=0.05)
    assert losses[2] < losses[0]
    with pytest.raises(ValueError, match="fp8='int4'"):
        ContrastiveStep(DualEncoder(clip_config("tiny")), FastConfig(fp8="int4"))


@pytest.mark.gpu
def test_cuda_float8_gradients_follow_bf16():
    """On an H100-class GPU, fp8 (real float8 GEMMs, tensorwise scales) gives the bf16 step's loss within 1%
    and gradients pointing the same way (cosine >= 0.95 for every block weight) from the same weights and
    batch. Trajectories are not compared: at this learning rate they are chaotic even in bf16."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("float8 matmuls need compute capability 8.9+")
    pytest.importorskip("torchao.float8")
    cfg = clip_config("ViT-B-32")
    losses, grads = {}, {}
    for fp8 in ("off", "tensorwise"):
        model, step, pixels, ids = _cuda_step(cfg, FastConfig(fp8=fp8), 64)
        loss = step.forward_loss(pixels, ids)
        loss.backward()
        losses[fp8] = loss.item()
        grads[fp8] = {n: p.grad.float().flatten() for n, p in model.named_parameters()
                      if ".blocks." in n and n.endswith("weight") and p.dim() == 2}
    assert losses["tensorwise"] == pytest.approx(losses["off"], rel=0.01), losses
    cosine = {n: torch.nn.functional.cosine_similarity(g, grads["off"][n], dim=0).item()
              for n, g in grads["tensorwise"].items()}
    assert len(cosine) == 96 and min(cosine.values()) >= 0.95, sorted(cosine.items(), key=lambda kv: kv[1])[:5]


def test_patch_embedding_as_one_gemm_equals_the_convolution():
    """VisionTower.embed_patches (unfolded patches times the conv weights) is the stride-p convolution,
    including a remainder of pixels that the convolution drops; a wrong channel count is named."""
    torch.manual_seed(0)
    vision = DualEncoder(clip_config("tiny")).vision
    for size in ((32, 32), (35, 41)):
        x = torch.randn(2, 3, *size)
        ref = vision.patch_embed(x).flatten(2).transpose(1, 2)
        assert torch.allclose(vision.embed_patches(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="4 channels"):
        vision.embed_patches(torch.randn(1, 4, 32, 32))


def test_profile_bench_tiny_records_each_variant(tmp_path):
    """bench/profile_step.py at tiny size on CPU: a variant with an Inductor setting runs, a variant naming an
    unknown setting is recorded as an error naming it, and the others are kept."""
    variants = ("compile=model,compile_backend=aot_eager;inductor.no_such_setting=1;"
                "compile=step,compile_backend=aot_eager,model.fused_qkv=0")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_step.py"), "--model", "tiny", "--batch-size",
                           "8", "--target-s", "0.2", "--profile-steps", "1", "--out", str(tmp_path),
                           "--variants", variants], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1, done.stderr[-3000:]  # one variant failed
    doc = json.loads((tmp_path / "profile_step.json").read_text())
    status = [(v["variant"], v["status"]) for v in doc["variants"]]
    assert [s for _, s in status] == ["ok", "error", "ok"], status
    assert "no_such_setting" in doc["variants"][1]["error"]
    ok = doc["variants"][0]
    assert ok["samples_per_s"] > 0 and ok["flops_per_step"] > 0 and ok["config"]["compile"] == "model"
    assert doc["variants"][2]["model_overrides"] == {"fused_qkv": False}


def _bench_module(name: str):
    """A bench/ script imported as a module (bench/ on the path while it loads its siblings)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


def test_throughput_plan_feeds_the_chosen_variant_from_shards():
    """--shards-variant: the real-data row feeds that variant's step and runs right after its synthetic row."""
    bench = _bench_module("train_throughput")
    variant = "compile-model+quack-mlp+cudnn-fa4+cudagraphs"
    names = [r.variant for r in bench.plan(["ViT-B-16"], variant)]
    assert names[names.index(variant) + 1] == variant + bench.SHARDS
    assert sum(n.endswith(bench.SHARDS) for n in names) == 1
    assert not any(n.endswith(bench.SHARDS) for n in (r.variant for r in bench.plan(["ViT-B-16"])))
    eager = [(r.impl, r.variant) for r in bench.plan(["ViT-B-16"], "eager")]  # open_clip has an eager row too
    assert eager[eager.index(("sensorium", "eager")) + 1] == ("sensorium", "eager" + bench.SHARDS)


def test_profile_gap_summary_bins_idle_time_between_device_activities():
    """The idle breakdown of bench/profile_step.py: activities merged across streams (an overlapped one leaves no
    gap), gaps binned by length per step, and the longest named by the kernels around it."""
    from types import SimpleNamespace

    bench = _bench_module("profile_step")

    def event(name, start, end, device="DeviceType.CUDA"):
        return SimpleNamespace(name=name, device_type=device, time_range=SimpleNamespace(start=start, end=end))

    events = [event("a", 0, 10), event("b", 5, 12), event("c", 14, 20), event("d", 150, 160),
              event("host op", 20, 150, "DeviceType.CPU"), event("Optimizer.step#AdamW.step", 20, 150)]
    summary = bench.gap_summary(SimpleNamespace(events=lambda: events), steps=2)
    assert summary["activities_per_step"] == 2.0  # the CPU op and the annotation are not device activity
    bins = summary["gaps_by_length"]
    assert bins["<5us"] == {"count_per_step": 0.5, "ms_per_step": 0.001}  # 12 -> 14 (b overlapped a)
    assert bins[">=100us"] == {"count_per_step": 0.5, "ms_per_step": 0.065}  # 20 -> 150
    assert bins["5-20us"]["count_per_step"] == bins["20-100us"]["count_per_step"] == 0
    assert summary["longest_gaps"][0] == {"us": 130, "after": "c", "before": "d"}


def test_jpeg_shards_reencode_png_members_and_keep_the_rest(tmp_path):
    """bench/shard_feed.jpeg_shards: a shard's .png member becomes a decodable .jpg of the same size, the caption
    is copied byte for byte, and an existing output folder is reused."""
    import io
    import tarfile

    from PIL import Image

    src, dst = tmp_path / "png", tmp_path / "jpg"
    src.mkdir()
    png = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 60)).save(png, "PNG")
    with tarfile.open(src / "train-000000.tar", "w") as tar:
        for name, data in (("s0.png", png.getvalue()), ("s0.txt", b"a red square")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bench = _bench_module("shard_feed")
    assert bench.jpeg_shards(src, dst, quality=90) == dst
    with tarfile.open(dst / "train-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert set(members) == {"s0.jpg", "s0.txt"} and members["s0.txt"] == b"a red square"
    image = Image.open(io.BytesIO(members["s0.jpg"]))
    assert image.format == "JPEG" and image.size == (24, 16)
    assert abs(image.convert("RGB").getpixel((12, 8))[0] - 200) < 10
    (dst / "train-000000.tar").write_bytes(b"kept")  # reused, not rewritten
    bench.jpeg_shards(src, dst)
    assert (dst / "train-000000.tar").read_bytes() == b"kept"
