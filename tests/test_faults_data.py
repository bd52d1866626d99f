"""Fault injection on data and derived state: shards (empty, garbage, cut short, a damaged header in the middle,
unsafe paths, missing members), images and audio, manifests, and the feature cache (damaged, stale with the same
size and time stamp, built by other weights). Problems are counted in samples or refused with the file named;
`strict` makes every one of them an error; nothing stale is ever used."""

from __future__ import annotations

import json
import logging
import os
import tarfile

import pytest
import torch

from _faults import FaultTower, add, member_offsets, png, truncate, wav, write_shard
from sensorium.data.features import cached_features
from sensorium.data.formats import ManifestSource, iter_source
from sensorium.data.shards import ShardError, SkipLog, iter_raw, iter_samples
from sensorium.modalities import DecodeError

CAPTIONS = ["a red one", "a green one", "a blue one", "a yellow one", "a cyan one", "a pink one"]


def _keys(samples) -> list[str]:
    return [s["__key__"] for s in samples]


@pytest.fixture()
def shard(tmp_path):
    return write_shard(tmp_path / "shards" / "a.tar", CAPTIONS)


@pytest.mark.parametrize("content", [b"", b"this is not a tar file at all" * 40])
def test_unreadable_shard_is_skipped_and_listed_or_strict(tmp_path, shard, content):
    bad = tmp_path / "shards" / "b.tar"
    bad.write_bytes(content)
    skips = SkipLog()
    samples = list(iter_samples(tmp_path / "shards", want={"image", "text"}, skips=skips))
    assert _keys(samples) == [f"s{i:03d}" for i in range(6)]  # the good shard is read in full
    assert skips.counts == {"unreadable_shard": 1} and skips.as_dict()["uncounted_shards"] == [str(bad)]
    with pytest.raises(DecodeError, match="b.tar"):
        list(iter_samples(tmp_path / "shards", skips=SkipLog(strict=True)))
    with pytest.raises(ShardError, match="b.tar"):
        list(iter_raw(bad))


def test_shard_cut_short_keeps_complete_samples(shard):
    cut = member_offsets(shard)["s003.png"] + 700  # inside sample 3's image
    truncate(shard, cut)
    skips = SkipLog()
    samples = list(iter_samples(shard, skips=skips))
    assert _keys(samples) == ["s000", "s001", "s002"]
    assert skips.counts == {"truncated_shard": 1} and skips.as_dict()["uncounted_shards"] == [str(shard)]
    with pytest.raises(DecodeError, match="truncated"):
        list(iter_samples(shard, skips=SkipLog(strict=True)))


def test_shard_cut_at_a_member_boundary_is_noticed(shard):
    truncate(shard, member_offsets(shard)["s004.png"])  # no partial member: only the end marker is missing
    skips = SkipLog()
    # s003 may have had more members after the cut: it is dropped and counted, not passed on incomplete
    assert _keys(iter_samples(shard, skips=skips)) == ["s000", "s001", "s002"]
    assert skips.counts == {"truncated_shard": 1} and skips.examples[0].startswith(f"{shard}:s003: truncated tar")


def test_damaged_header_mid_shard_loses_one_member_not_the_rest(shard):
    data = bytearray(shard.read_bytes())
    at = member_offsets(shard)["s002.png"]
    data[at:at + 100] = b"\x00garbage" * 12 + b"\x00" * 4  # the header of sample 2's image is destroyed
    shard.write_bytes(bytes(data))
    skips = SkipLog()
    samples = list(iter_samples(shard, want={"image", "text"}, skips=skips))
    assert _keys(samples) == [f"s{i:03d}" for i in range(6)]  # every sample after the damage is still read
    assert [("image" in s) for s in samples] == [True, True, False, True, True, True]
    assert skips.counts == {"damaged_tar": 1} and skips.total == 1
    with pytest.raises(DecodeError, match="damaged tar bytes"):
        list(iter_samples(shard, skips=SkipLog(strict=True)))


def test_corrupt_members_count_samples_not_events(tmp_path):
    path = tmp_path / "c.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(4):
            broken = i == 1
            add(tar, f"s{i}.png", b"\x89PNG\r\n\x1a\n cut" if broken else png((10 * i, 0, 0)))
            add(tar, f"s{i}.wav", b"RIFF....WAVEfmt " if broken else wav(300.0))
            add(tar, f"s{i}.txt", b"caption")
        add(tar, "../escape.txt", b"outside")
    skips = SkipLog()
    samples = list(iter_samples(path, skips=skips))
    assert len(samples) == 4 and "image" not in samples[1] and "audio" not in samples[1]
    assert skips.counts == {"corrupt_image": 1, "corrupt_audio": 1, "unsafe_path": 1}
    assert skips.total == 2  # sample s1 (two bad members) and the unsafe member: two places, not three events


def _towers(scale: float = 1.0) -> dict:
    return {"image": FaultTower("image", scale), "text": FaultTower("text", scale)}


def test_missing_members_are_counted_and_strict_makes_them_errors(tmp_path):
    shard = write_shard(tmp_path / "d" / "a.tar", CAPTIONS, skip={2: "png", 4: "txt"})
    feats = cached_features(shard, _towers(), tmp_path / "cache", progress=False)
    assert feats.skips["by_reason"] == {"missing_image": 1, "missing_text": 1} and feats.skips["total"] == 2
    assert feats.present["image"].tolist() == [True, True, False, True, True, True]
    with pytest.raises(DecodeError, match=r"a.tar:s002: no image member"):
        cached_features(shard, _towers(), tmp_path / "cache2", strict=True, progress=False)
    with pytest.raises(DecodeError, match="no image member"):  # also from a cache built without strict
        cached_features(shard, _towers(), tmp_path / "cache", strict=True, progress=False)


def test_stale_cache_same_size_and_mtime_different_content_is_not_used(tmp_path):
    shard = write_shard(tmp_path / "d" / "a.tar", CAPTIONS)
    first = cached_features(shard, _towers(), tmp_path / "cache", progress=False)
    stat = shard.stat()
    shuffled = write_shard(tmp_path / "tmp.tar", [CAPTIONS[i] for i in (3, 0, 5, 1, 4, 2)])
    os.replace(shuffled, shard)  # same captions shuffled: same size ...
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the same time stamp
    assert shard.stat().st_size == stat.st_size and shard.stat().st_mtime_ns == stat.st_mtime_ns
    second = cached_features(shard, _towers(), tmp_path / "cache", progress=False)
    assert second.texts == [CAPTIONS[i] for i in (3, 0, 5, 1, 4, 2)] != first.texts
    expected = FaultTower("text").prepare(second.texts)
    assert torch.equal(second.features["text"], expected)  # recomputed, not the stale rows
    assert len(list((tmp_path / "cache").glob("*-index.json"))) == 2


def test_cache_is_keyed_by_tower_weights(tmp_path):
    shard = write_shard(tmp_path / "d" / "a.tar", CAPTIONS)
    one = cached_features(shard, _towers(1.0), tmp_path / "cache", progress=False)
    two = cached_features(shard, _towers(2.0), tmp_path / "cache", progress=False)  # same name, other weights
    assert torch.allclose(two.features["text"], 2 * one.features["text"])


@pytest.mark.parametrize("damage", ["truncate features", "garbage features", "truncate index"])
def test_damaged_cache_is_recomputed_with_a_warning(tmp_path, damage, caplog):
    shard = write_shard(tmp_path / "d" / "a.tar", CAPTIONS)
    fresh = cached_features(shard, _towers(), tmp_path / "cache", progress=False).features["text"].clone()
    target = next((tmp_path / "cache").glob("*-index.json" if "index" in damage else "*-text-*.safetensors"))
    if damage.startswith("truncate"):
        truncate(target, 0.5)
    else:
        target.write_bytes(os.urandom(target.stat().st_size))
    with caplog.at_level(logging.WARNING):
        again = cached_features(shard, _towers(), tmp_path / "cache", progress=False)
    assert "is damaged" in caplog.text and target.name in caplog.text
    assert torch.equal(again.features["text"], fresh) and again.keys == [f"a.tar:s{i:03d}" for i in range(6)]


def test_manifest_with_no_modality_column_is_refused_naming_columns(tmp_path):
    (tmp_path / "a.png").write_bytes(png((1, 2, 3)))
    manifest = tmp_path / "m.csv"
    manifest.write_text("picture,caption\na.png,a thing\n")
    with pytest.raises(ValueError, match=r"no column names a modality \(columns: picture, caption;.*"
                                         r"'caption' -> 'text'\?|no column names a modality"):
        ManifestSource(manifest)
    assert len(list(iter_source(ManifestSource(manifest, columns={"picture": "image", "caption": "text"})))) == 1


def test_ragged_csv_rows_are_counted_or_strict(tmp_path):
    (tmp_path / "a.png").write_bytes(png((1, 2, 3)))
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,text\na.png,one\na.png,two,extra\na.png\na.png,four\n")
    skips = SkipLog()
    assert [s["text"] for s in iter_source(ManifestSource(manifest), skips)] == ["one", "four"]
    assert skips.counts == {"ragged_row": 2} and "m.csv:3" in skips.examples[0]
    with pytest.raises(DecodeError, match=r"m.csv:3: row has 3 cells, the header has 2"):
        list(iter_source(ManifestSource(manifest), SkipLog(strict=True)))


@pytest.mark.parametrize("text", ["", "\n\n", '{"image": "a.png"}\n[1, 2]\n', '{"image": "a.png"\n'])
def test_empty_or_malformed_jsonl_manifest_is_refused_with_the_line(tmp_path, text):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(text)
    with pytest.raises(ValueError, match=r"m.jsonl(:\d+)?: "):
        ManifestSource(manifest)


def test_coco_json_damaged_is_named(tmp_path):
    coco = tmp_path / "captions.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}], "annotations": [{"image_id": 1}]}))
    from sensorium.data.formats import CocoSource

    with pytest.raises(ValueError, match=r"captions.json: annotations\[0\] needs image_id and caption"):
        CocoSource(coco)
    truncate(coco, 0.5)
    with pytest.raises(ValueError, match=r"captions.json: not valid JSON"):
        CocoSource(coco)


def test_decoder_token_cache_is_keyed_by_images_and_tower_weights(tmp_path):
    from sensorium.encoders.base import Tower
    from sensorium.train.vlm_data import MediaStore

    class Linear(Tower):
        name, modality, dim = "lin", "image", 2

        def __init__(self, seed: int):
            super().__init__()
            torch.manual_seed(seed)
            self.proj = torch.nn.Linear(12, 2)

        def prepare(self, values):
            return values.float().reshape(len(values), -1) / 255

        def forward(self, inputs):
            return self.proj(inputs)

    images = torch.randint(0, 255, (5, 3, 2, 2), dtype=torch.uint8)
    first = MediaStore(images, Linear(0), frozen=True, cache_dir=tmp_path, tag="split").tokens.tokens.clone()
    shuffled = MediaStore(images.flip(0), Linear(0), frozen=True, cache_dir=tmp_path, tag="split").tokens.tokens
    assert torch.equal(shuffled, first.flip(0))  # same tag, other pictures: not the cached rows
    other = MediaStore(images, Linear(1), frozen=True, cache_dir=tmp_path, tag="split").tokens.tokens
    assert not torch.equal(other, first)  # same tower name, other weights
    cached = sorted(tmp_path.glob("tokens-lin-*.safetensors"))
    assert len(cached) == 3
    truncate(cached[0], 0.5)  # a damaged entry is encoded again, not trusted
    again = [MediaStore(x, Linear(s), frozen=True, cache_dir=tmp_path, tag="split").tokens.tokens
             for x, s in ((images, 0), (images.flip(0), 0), (images, 1))]
    assert torch.equal(again[0], first) and torch.equal(again[1], first.flip(0)) and torch.equal(again[2], other)


def test_inspect_counts_missing_members_and_strict_fails(tmp_path, capsys):
    from sensorium.cli import main

    write_shard(tmp_path / "d" / "a.tar", CAPTIONS, skip={3: "txt"})
    assert main(["-q", "data", "inspect", str(tmp_path / "d"), "--no-sheet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["modalities"] == {"image": 6, "text": 5}
    assert report["skipped"]["by_reason"] == {"missing_text": 1} and "a.tar:s003" in report["skipped"]["examples"][0]
    assert main(["-q", "data", "inspect", str(tmp_path / "d"), "--no-sheet", "--strict"]) == 1
    assert "a.tar:s003: no text member" in capsys.readouterr().err
