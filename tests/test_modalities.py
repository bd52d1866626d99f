import io

import numpy as np
import pytest
from PIL import Image

from sensorium import modalities
from sensorium.modalities import DecodeError, Modality, Waveform


def test_core_modalities_are_registered():
    assert {"text", "image", "audio"} <= set(modalities.names())
    assert modalities.for_extension("PNG").name == "image"
    assert modalities.for_extension(".flac").name == "audio"
    assert modalities.for_extension("txt").name == "text"
    assert modalities.for_extension("xyz") is None


def test_unknown_modality_lists_known_ones():
    with pytest.raises(KeyError, match="registered: .*image"):
        modalities.get("smell")


def test_extension_clash_is_refused():
    with pytest.raises(ValueError, match="already belong to 'image'"):
        modalities.register(Modality("photo2", ("png",), lambda d, e: d, lambda v: ("png", v)))


def test_roundtrip_each_modality():
    img = Image.new("RGBA", (8, 6), (255, 0, 0, 0))
    ext, data = modalities.get("image").encode(img.convert("RGB"))
    assert modalities.get("image").decode(data, ext).size == (8, 6)
    # transparent pixels are composited onto white
    buf = io.BytesIO(); img.save(buf, format="PNG")
    assert modalities.get("image").decode(buf.getvalue(), "png").getpixel((0, 0)) == (255, 255, 255)
    wave = Waveform(np.sin(np.linspace(0, 100, 8000)).astype(np.float32) * 0.5, 16000)
    ext, data = modalities.get("audio").encode(wave)
    back = modalities.get("audio").decode(data, ext)
    assert back.sample_rate == 16000 and np.abs(back.samples - wave.samples).max() < 1e-3
    assert modalities.get("text").decode(" a cat \n".encode(), "txt") == "a cat"


def test_audio_is_resampled_to_16k():
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros((44100, 2), dtype=np.float32), 44100, format="WAV")
    wave = modalities.get("audio").decode(buf.getvalue(), "wav")
    assert wave.sample_rate == 16000 and abs(len(wave.samples) - 16000) <= 1


@pytest.mark.parametrize("name,data", [("image", b"not a png"), ("audio", b"RIFF junk"), ("text", b"\xff\xfe\xfa")])
def test_corrupt_bytes_give_named_errors(name, data):
    ext = modalities.get(name).extensions[0]
    with pytest.raises(DecodeError, match="shard-0.tar:key1"):
        modalities.decode_member(ext, data, source="shard-0.tar:key1")
