"""The streaming loader: every sample exactly once whatever the shard/worker counts (fewer shards than workers
included), resumable mid-epoch, bad members and shards skipped and counted (or raising when strict), and the
batch convention with `present` masks."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from sensorium import modalities
from sensorium.data.loader import StreamingDataset, StreamingLoader, collate
from sensorium.data.shards import ShardWriter
from sensorium.modalities import DecodeError, Waveform

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def _shards(folder, n, per_shard, image_every=2):
    """n samples with text; every `image_every`-th also has an image (so others lack it)."""
    with ShardWriter(folder, max_count=per_shard) as writer:
        for i in range(n):
            sample = {"__key__": f"s{i:04d}", "text": f"sample {i}", "json": {"i": i}}
            if i % image_every == 0:
                sample["image"] = Image.new("RGB", (8, 8), (i % 256, 0, 0))
            writer.write(sample)
    return folder


def _keys(loader):
    return [k for batch in loader for k in batch["__key__"]]


@pytest.mark.parametrize("shards,workers", [(1, 3), (2, 3), (5, 2), (3, 0)])
def test_every_sample_exactly_once(tmp_path, shards, workers):
    n = 30
    _shards(tmp_path, n, per_shard=-(-n // shards))
    assert len(list(tmp_path.glob("*.tar"))) == shards
    loader = StreamingLoader(StreamingDataset(tmp_path), batch_size=4, num_workers=workers)
    keys = _keys(loader)
    assert sorted(keys) == [f"s{i:04d}" for i in range(n)]
    assert loader.dataset.epoch == 1 and loader.samples_consumed == 0  # a finished epoch resets progress
    assert sorted(_keys(loader)) == sorted(keys)  # and a second epoch reads everything again


def test_batch_convention_with_present_masks(tmp_path):
    _shards(tmp_path, 6, per_shard=6, image_every=3)
    batch = next(iter(StreamingLoader(StreamingDataset(tmp_path), batch_size=6)))
    assert batch["present"]["image"].tolist() == [True, False, False, True, False, False]
    assert batch["present"]["text"].all()
    assert batch["image"].shape == (6, 3, 8, 8) and batch["image"].dtype == torch.uint8
    assert batch["image"][1].abs().sum() == 0  # absent -> zeros, flagged by the mask
    assert batch["text"][0] == "sample 0" and batch["json"][2] == {"i": 2}


def test_collate_pads_ragged_modalities_and_wanted_but_absent():
    waves = [Waveform(np.ones(n, np.float32)) for n in (5, 3)]
    batch = collate([{"audio": waves[0]}, {"audio": waves[1]}, {"text": "no audio"}], want=["audio", "text", "video"])
    assert batch["audio"].shape == (3, 5) and batch["lengths"]["audio"].tolist() == [5, 3, 0]
    assert batch["audio"][1, 3:].abs().sum() == 0
    assert batch["present"]["video"].tolist() == [False] * 3 and batch["video"] is None
    assert batch["text"] == [None, None, "no audio"]


def test_resume_mid_epoch_with_workers(tmp_path):
    n = 40
    _shards(tmp_path, n, per_shard=10)
    loader = StreamingLoader(StreamingDataset(tmp_path), batch_size=3, num_workers=2)
    seen = []
    for k, batch in enumerate(loader):
        seen += batch["__key__"]
        if k == 4:
            state = json.loads(json.dumps(loader.state_dict()))  # survives a JSON checkpoint
            break
    assert state["samples_consumed"] == len(seen) == 15 and state["epoch"] == 0
    resumed = StreamingLoader(StreamingDataset(tmp_path), batch_size=3, num_workers=3)  # worker count may change
    resumed.load_state_dict(state)
    rest = _keys(resumed)
    assert sorted(seen + rest) == [f"s{i:04d}" for i in range(n)]
    assert resumed.dataset.epoch == 1


def test_direct_iteration_tracks_state(tmp_path):
    _shards(tmp_path, 10, per_shard=4)
    dataset = StreamingDataset(tmp_path)
    stream = iter(dataset)
    first = [next(stream)["__key__"] for _ in range(4)]
    state = dataset.state_dict()
    assert state["samples_consumed"] == 4
    again = StreamingDataset(tmp_path)
    again.load_state_dict(state)
    assert sorted(first + [s["__key__"] for s in again]) == [f"s{i:04d}" for i in range(10)]


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png_bytes():
    return modalities.get("image").encode(Image.new("RGB", (4, 4)))[1]


def test_corrupt_member_is_skipped_and_counted_in_workers_or_strict(tmp_path):
    _tar(tmp_path / "a.tar", [("k1.txt", b"one"), ("k1.png", _png_bytes()), ("k2.txt", b"two"),
                              ("k2.png", b"\x89PNG corrupt"), ("k3.png", b"broken too")])
    loader = StreamingLoader(StreamingDataset(tmp_path), batch_size=2, num_workers=2)
    keys = _keys(loader)
    assert sorted(keys) == ["k1", "k2"]  # k2 keeps its text; k3 had nothing decodable
    assert loader.skips.counts == {"corrupt_image": 2, "no_modality": 1}
    assert any("a.tar:k2" in e for e in loader.skips.examples)
    with pytest.raises(DecodeError, match="a.tar:k2"):
        list(StreamingDataset(tmp_path, strict=True))


def test_truncated_shard_keeps_complete_samples_and_counts(tmp_path):
    _shards(tmp_path / "src", 8, per_shard=8, image_every=1)
    data = next((tmp_path / "src").glob("*.tar")).read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cut.tar").write_bytes(data[: len(data) // 2 + 100])
    loader = StreamingLoader(StreamingDataset(tmp_path / "cut"), batch_size=4, num_workers=2)
    keys = _keys(loader)
    assert 0 < len(keys) < 8 and sorted(keys) == [f"s{i:04d}" for i in range(len(keys))]  # a prefix
    assert loader.skips.counts == {"truncated_shard": 1}
    with pytest.raises(DecodeError, match="truncated"):
        list(StreamingDataset(tmp_path / "cut", strict=True))


def test_member_path_outside_root_is_skipped(tmp_path):
    _tar(tmp_path / "evil.tar", [("k1.txt", b"fine"), ("../../etc/k2.txt", b"escape"), ("/abs/k3.txt", b"abs"),
                                 ("k4.txt", b"also fine")])
    dataset = StreamingDataset(tmp_path)
    assert [s["text"] for s in dataset] == ["fine", "also fine"]
    assert dataset.skips.counts == {"unsafe_path": 2}
    with pytest.raises(DecodeError, match="outside the shard root"):
        list(StreamingDataset(tmp_path, strict=True))


def test_decompression_bomb_in_a_shard_is_a_counted_skip(tmp_path, monkeypatch):
    _shards(tmp_path, 4, per_shard=4, image_every=1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    dataset = StreamingDataset(tmp_path)
    samples = list(dataset)
    assert len(samples) == 4 and not any("image" in s for s in samples)
    assert dataset.skips.counts == {"corrupt_image": 4}
    assert "decompression bomb" in dataset.skips.examples[0]


def test_want_limits_decoding_and_shuffle_is_a_permutation(tmp_path):
    _shards(tmp_path, 12, per_shard=3)
    only_text = list(StreamingDataset(tmp_path, want=["text"]))
    assert all("image" not in s for s in only_text) and len(only_text) == 12
    shuffled = StreamingDataset(tmp_path, shuffle=True, shuffle_buffer=4, seed=1)
    keys = [s["__key__"] for s in shuffled]
    assert sorted(keys) == [s["__key__"] for s in only_text] and keys != sorted(keys)


def test_persistent_workers_are_refused(tmp_path):
    _shards(tmp_path, 2, per_shard=2)
    with pytest.raises(ValueError, match="persistent_workers"):
        StreamingLoader(StreamingDataset(tmp_path), num_workers=1, persistent_workers=True)
