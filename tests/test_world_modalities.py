"""The modalities World added (depth, segmentation, video, timeseries, tabular, qa), multi-part extensions, and
the decompression-bomb guard every PNG-based modality shares."""

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from sensorium import modalities
from sensorium.data.shards import decode_sample
from sensorium.modalities import Clip, DecodeError


def _values():
    rng = np.random.default_rng(0)
    return {
        "depth": rng.uniform(0, 1, (12, 10)).astype(np.float32),
        "segmentation": rng.integers(0, 7, (12, 10)).astype(np.uint8),
        "video": Clip(rng.integers(0, 256, (5, 8, 6, 3)).astype(np.uint8), 12.5),
        "timeseries": rng.normal(size=(20, 3)).astype(np.float32),
        "tabular": {"a": 1, "b": "x", "c": 0.5, "d": None, "e": True},
        "qa": [{"question": "What shape?", "answer": "circle", "type": "shape"}],
    }


@pytest.mark.parametrize("name", list(_values()))
def test_new_modalities_roundtrip_and_tensor(name):
    value = _values()[name]
    modality = modalities.get(name)
    ext, data = modality.encode(value)
    assert modalities.for_extension(ext) is modality
    back = modality.decode(data, ext)
    if name == "depth":
        assert np.abs(back - value).max() <= 0.5 / 65535 + 1e-7
    elif name == "video":
        assert back.fps == 12.5 and np.array_equal(back.frames, value.frames)
    elif isinstance(value, np.ndarray):
        assert np.array_equal(back, value)
    else:
        assert back == value
    assert modality.encode(back) == (ext, data) or name == "depth"  # deterministic bytes
    if modality.to_tensor is not None:
        tensor = modality.to_tensor(back)
        assert tensor.dtype.is_floating_point or tensor.dtype.is_signed or str(tensor.dtype) == "torch.uint8"
    if modality.preview is not None:
        assert isinstance(modality.preview(back), Image.Image)


def test_multi_part_extensions_resolve_longest_suffix_first():
    assert modalities.for_extension("depth.png").name == "depth"
    assert modalities.for_extension("left.depth.png").name == "depth"
    assert modalities.for_extension("seg.png").name == "segmentation"
    assert modalities.for_extension("png").name == "image"
    assert modalities.for_extension("foo.png").name == "image"
    assert modalities.for_extension("video.png").name == "video"
    assert modalities.for_extension("row.json").name == "tabular"
    assert modalities.for_extension("json") is None  # plain .json stays sample metadata


def test_decode_sample_routes_members_by_full_extension():
    values = _values()
    raw = {"__key__": "k", "__shard__": "s.tar"}
    for name, value in values.items():
        ext, data = modalities.get(name).encode(value)
        raw[ext] = data
    ext, raw["png"] = modalities.get("image").encode(Image.new("RGB", (4, 4)))
    raw["txt"] = b"hello"
    sample = decode_sample(raw)
    assert set(values) | {"image", "text"} <= set(sample)
    assert isinstance(sample["depth"], np.ndarray) and sample["depth"].dtype == np.float32
    assert sample["segmentation"].dtype == np.uint8 and isinstance(sample["video"], Clip)


@pytest.mark.parametrize("name,ext,data", [
    ("depth", "depth.png", b"\x89PNG garbage"), ("segmentation", "seg.png", b"nope"),
    ("video", "video.png", b"nope"), ("timeseries", "ts.npy", b"\x93NUMPY broken"),
    ("timeseries", "ts.csv", b"1,2\n3,x\n"), ("tabular", "row.json", b"[1, 2]"),
    ("tabular", "row.json", b'{"a": [1]}'), ("qa", "qa.json", b'[{"question": "q"}]'),
])
def test_corrupt_members_give_named_errors(name, ext, data):
    with pytest.raises(DecodeError, match="shard-0.tar:key7"):
        modalities.decode_member(ext, data, source="shard-0.tar:key7")


def test_video_film_strip_without_frame_count_is_refused():
    _, data = modalities.get("image").encode(Image.new("RGB", (24, 8)))
    with pytest.raises(DecodeError, match="frames"):
        modalities.get("video").decode(data, "video.png")


def test_timeseries_csv_with_header():
    series = modalities.get("timeseries").decode(b"x,y\n1,2\n3,4\n5,6\n", "ts.csv")
    assert series.shape == (3, 2) and series[2, 1] == 6


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (no real pixel data): what a bomb looks like on arrival."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 100_000])  # above PIL's limit (warning zone) and above 2x (PIL's error)
@pytest.mark.parametrize("name,ext", [("image", "png"), ("depth", "depth.png"), ("segmentation", "seg.png"),
                                      ("video", "video.png")])
def test_decompression_bombs_are_refused_before_decoding(side, name, ext):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DecodeError, match="decompression bomb"):
            modalities.get(name).decode(_png_header_only(side, side), ext)


def test_bomb_limit_follows_pil_setting(monkeypatch):
    _, data = modalities.get("image").encode(Image.new("RGB", (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 pixels: over the limit, under PIL's own 2x error
    with pytest.raises(DecodeError, match="MAX_IMAGE_PIXELS = 3000"):
        modalities.get("image").decode(data, "png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over 2x: PIL's DecompressionBombError, same clear message
    with pytest.raises(DecodeError, match="MAX_IMAGE_PIXELS = 1000"):
        modalities.get("image").decode(data, "png")
