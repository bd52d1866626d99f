"""Contrastive objectives: Symile against brute-force enumeration, masks equal to subsetting, and a 2-process gloo
run whose losses and (DDP-averaged) gradients equal the single-process ones on the same global batch for CLIP,
SigLIP and Symile, global and local loss, with uneven present masks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from sensorium.objectives import ClipLoss, SigLipLoss, SymileLoss, mip, pairwise_scores, symile_scores

pytestmark = pytest.mark.usefixtures("one_thread")


def _reps(n: int, d: int, m: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, d, generator=g), dim=1) for _ in range(m)]


def _brute_symile(reps: list[torch.Tensor], scale: float) -> torch.Tensor:
    """Symile with every combination of non-anchor rows as negatives, enumerated one by one."""
    import itertools

    n, total = reps[0].shape[0], 0.0
    for m, anchor in enumerate(reps):
        others = [r for j, r in enumerate(reps) if j != m]
        for i in range(n):
            combos = [mip(anchor[i:i + 1], *[o[k:k + 1] for o, k in zip(others, ks)])
                      for ks in itertools.product(range(n), repeat=len(others))]
            pos = mip(anchor[i:i + 1], *[o[i:i + 1] for o in others])
            total = total + (torch.logsumexp(scale * torch.cat(combos), 0) - scale * pos[0]) / n
    return total / len(reps)


@pytest.mark.parametrize("m", [3, 4])
def test_symile_n_squared_equals_enumeration(m):
    reps = _reps(4, 5, m)
    loss = SymileLoss("n_squared")(reps, torch.tensor(math.log(3.0)))
    assert torch.allclose(loss, _brute_symile(reps, 3.0), atol=1e-5)


def test_symile_n_sampling_puts_positives_on_the_diagonal_and_is_seeded():
    reps = _reps(6, 4, 3)
    a, b = SymileLoss("n", seed=3), SymileLoss("n", seed=3)
    first = a(reps, torch.tensor(0.0))
    assert torch.equal(first, b(reps, torch.tensor(0.0)))  # same seed, same call count: same negatives
    assert int(a.calls) == 1 and "calls" in a.state_dict()
    assert not torch.equal(first, a(reps, torch.tensor(0.0)))  # next call, new permutations
    # with identical rows every negative equals the positive: the loss is exactly log(n)
    same = [r[:1].expand(6, -1) for r in reps]
    assert torch.allclose(SymileLoss("n")(same, torch.tensor(0.0)), torch.tensor(math.log(6)), atol=1e-5)


def test_masks_equal_subsetting():
    reps = _reps(8, 4, 3)
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    sub = [r[mask] for r in reps]
    scale, bias = torch.tensor(1.5), torch.tensor(-2.0)
    assert torch.allclose(ClipLoss()(reps[:2], scale, mask=mask), ClipLoss()(sub[:2], scale))
    assert torch.allclose(SigLipLoss()(reps[:2], scale, bias, mask=mask), SigLipLoss()(sub[:2], scale, bias))
    assert torch.allclose(SymileLoss("n_squared")(reps, scale, mask=mask), SymileLoss("n_squared")(sub, scale))
    none = torch.zeros(8, dtype=torch.bool)
    assert ClipLoss()(reps[:2], scale, mask=none).item() == 0.0
    # no mask (the path without host syncs) equals a mask that keeps every row
    every = torch.ones(8, dtype=torch.bool)
    assert torch.allclose(ClipLoss()(reps[:2], scale), ClipLoss()(reps[:2], scale, mask=every))
    assert torch.allclose(SigLipLoss()(reps[:2], scale, bias), SigLipLoss()(reps[:2], scale, bias, mask=every))
    assert torch.allclose(SymileLoss("n_squared")(reps, scale), SymileLoss("n_squared")(reps, scale, mask=every))


def test_mismatched_batch_sizes_are_named():
    a, b = _reps(4, 3, 1)[0], _reps(5, 3, 1)[0]
    with pytest.raises(ValueError, match=r"different batch sizes \[4, 5\]"):
        ClipLoss()([a, b], torch.tensor(0.0))
    with pytest.raises(ValueError, match="different batch sizes"):
        SymileLoss()([a, b, a], torch.tensor(0.0))


def test_zero_shot_scores():
    cand, a, c = _reps(3, 4, 3)
    assert torch.allclose(symile_scores(cand, [a, c])[1, 2], mip(a[1:2], cand[2:3], c[1:2])[0])
    expected = a[0] @ cand[1] + c[0] @ cand[1] + a[0] @ c[0]
    assert torch.allclose(pairwise_scores(cand, [a, c])[0, 1], expected)


# ---- 2-process gloo run -------------------------------------------------------------------------------------

GLOBAL_BATCH, WORLD = 8, 2
# rank 0 keeps 3 of its 4 rows, rank 1 keeps 1 (uneven); "one_rank" leaves rank 1 with nothing present
MASKS = {"none": None, "uneven": [1, 0, 1, 1, 0, 0, 1, 0], "one_rank": [1, 1, 0, 1, 0, 0, 0, 0]}
GROUPS = [0, 1, 2, 0, 3, 0, 5, 6]  # rows 0, 3 and 5 are duplicates, on both ranks


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.ModuleList(nn.Linear(6, 4) for _ in range(3))
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.logit_bias = nn.Parameter(torch.tensor(-1.0))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [F.normalize(e(x), dim=1) for e, x in zip(self.enc, xs)]


def _cases() -> list[tuple[str, str, bool, str]]:
    out = []
    for loss in ("clip", "clip_groups", "siglip", "symile_n", "symile_n2"):
        for local in (False, True):
            for mask in MASKS:
                out.append((f"{loss}/{'local' if local else 'global'}/{mask}", loss, local, mask))
    return out


def _loss(kind: str, local: bool, model: _Tiny, emb: list[torch.Tensor], mask: torch.Tensor | None,
          groups: torch.Tensor) -> torch.Tensor:
    if kind.startswith("clip"):
        return ClipLoss(local)(emb[:2], model.logit_scale, mask=mask,
                               groups=groups if kind == "clip_groups" else None)
    if kind == "siglip":
        return SigLipLoss(local)(emb[:2], model.logit_scale, model.logit_bias, mask=mask)
    return SymileLoss("n" if kind == "symile_n" else "n_squared", local, seed=5)(emb, model.logit_scale, mask=mask)


def _run_cases(rank: int, world: int) -> dict[str, dict[str, list[float]]]:
    """Every case on this rank's slice of the global batch; gradients all-reduced and averaged as DDP does."""
    g = torch.Generator().manual_seed(1)
    xs_global = [torch.randn(GLOBAL_BATCH, 6, generator=g) for _ in range(3)]
    per = GLOBAL_BATCH // world
    rows = slice(rank * per, (rank + 1) * per)
    results = {}
    for name, kind, local, mask_name in _cases():
        model = _Tiny()
        mask = None if MASKS[mask_name] is None else torch.tensor(MASKS[mask_name], dtype=torch.bool)[rows]
        loss = _loss(kind, local, model, model([x[rows] for x in xs_global]), mask, torch.tensor(GROUPS)[rows])
        loss.backward()
        grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])
        mean_loss = loss.detach().clone()
        if world > 1:
            dist.all_reduce(grads)
            dist.all_reduce(mean_loss)
            grads, mean_loss = grads / world, mean_loss / world
        results[name] = {"loss": [loss.item()], "mean_loss": [mean_loss.item()], "grads": grads.tolist()}
    return results


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)  # two processes on a shared 2-core machine
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = _run_cases(rank, world)
        Path(f"{out}.{rank}").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_two_process_losses_and_gradients_equal_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(WORLD, str(tmp_path / "pg"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    single = _run_cases(0, 1)
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(WORLD)]
    for name, _, local, _ in _cases():
        expected = single[name]
        for rank in ranks:
            got = rank[name]
            if not local:  # every rank computes the whole global loss
                assert got["loss"][0] == pytest.approx(expected["loss"][0], abs=1e-5), name
            assert got["mean_loss"][0] == pytest.approx(expected["loss"][0], abs=1e-5), name
            assert torch.allclose(torch.tensor(got["grads"]), torch.tensor(expected["grads"]), atol=1e-5), name


def test_multimodal_objective_pairs_and_symile_masks():
    from sensorium.objectives.multimodal import MultiModalObjective

    reps = dict(zip(("image", "text", "audio"), _reps(6, 4, 3)))
    present = {"image": torch.ones(6, dtype=torch.bool), "text": torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool),
               "audio": torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.bool)}
    scale = torch.tensor(1.0)
    loss, logs = MultiModalObjective("clip")(reps, scale, present=present)
    expected = [ClipLoss()([reps[a], reps[b]], scale, mask=present[a] & present[b])
                for a, b in (("image", "text"), ("image", "audio"), ("text", "audio"))]
    assert torch.allclose(loss, sum(expected) / 3) and set(logs) == {"loss/image-text", "loss/image-audio",
                                                                     "loss/text-audio"}
    both = present["text"] & present["audio"]
    dropped, _ = MultiModalObjective("symile", "n_squared")(reps, scale, present=present)
    assert torch.allclose(dropped, SymileLoss("n_squared")(list(reps.values()), scale, mask=both))
    embedded, _ = MultiModalObjective("symile", "n_squared", missing="embed")(reps, scale, present=present)
    assert torch.allclose(embedded, SymileLoss("n_squared")(list(reps.values()), scale))  # the model encoded absences
