"""The Python front door: `sensorium.load` recognises every layout by its files, `embed` gives the same vectors
however an item is handed over (path, bytes, data URI, PIL image, array) and the same as the model's own modules,
chat answers in the server's message format, and bad input is named."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sensorium
from sensorium.encoders import build_tower
from sensorium.inference import ItemError, to_conversation
from sensorium.models.aligned import AlignedConfig, AlignedModel, HeadConfig


def _picture(colour=(220, 30, 30)) -> Image.Image:
    img = Image.new("RGB", (48, 48), (255, 255, 255))
    img.paste(colour, (12, 12, 36, 36))
    return img


@pytest.fixture(scope="module")
def aligned_run(tmp_path_factory):
    """A composer run directory (model/ inside), random linear heads over the packaged towers."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    heads = {"image": HeadConfig(1280, 0), "text": HeadConfig(384, 0)}
    AlignedModel(AlignedConfig(dim=16, heads=heads, towers={"image": "efficientnet-lite0", "text": "minilm-l6"})
                 ).save(run / "model")
    return run


def test_aligned_run_embeds_like_its_own_modules(aligned_run):
    model = sensorium.load(aligned_run)
    assert model.kind == "embedder" and model.modalities == ["image", "text"] and model.dim == 16
    texts = ["a red square", "a photo of a dog", "an empty page"]
    got = model.embed("text", texts)
    heads = AlignedModel.load(aligned_run / "model")
    with torch.no_grad():
        want = heads.embed("text", build_tower("minilm-l6").encode(texts))
    assert got.dtype == torch.float32 and got.shape == (3, 16)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-5)
    # batching does not change the numbers, nor does the order of the others
    assert torch.allclose(model.embed("text", texts, batch_size=1), got, atol=1e-5)
    assert torch.allclose(model.embed("text", texts[::-1])[0], got[2], atol=1e-5)


def test_an_image_is_the_same_however_it_is_handed_over(aligned_run, tmp_path):
    model = sensorium.load(aligned_run)
    picture = _picture()
    path = tmp_path / "red.png"
    picture.save(path)
    data = path.read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    forms = [str(path), path, data, uri, picture, np.asarray(picture)]
    vectors = model.embed("image", forms)
    for i in range(1, len(forms)):
        assert torch.allclose(vectors[i], vectors[0], atol=1e-5), f"form {i} differs"
    other = model.embed("image", _picture((30, 30, 220)))
    assert not torch.allclose(other[0], vectors[0], atol=1e-3)  # a different picture is a different vector


def test_bad_input_is_named(aligned_run, tmp_path):
    model = sensorium.load(aligned_run)
    with pytest.raises(ValueError, match=r"embeds image, text, not 'audio'"):
        model.embed("audio", [np.zeros(1600, np.float32)])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ItemError, match=r"image item 1 \(.*bad.png\): cannot decode as image"):
        model.embed("image", [_picture(), tmp_path / "bad.png"])
    with pytest.raises(ItemError, match="text item 0: empty text"):
        model.embed("text", ["  "])
    with pytest.raises(ItemError, match="no text items given"):
        model.embed("text", [])
    with pytest.raises(ItemError, match="base64 payload does not decode"):
        model.embed("image", ["data:image/png;base64,@@@"])
    with pytest.raises(ValueError, match="not a model directory Sensorium knows. Looked for"):
        sensorium.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model directory and no packaged model"):
        sensorium.load(tmp_path / "nothing-here")


def test_unified_run_embeds_like_its_model(tmp_path):
    from sensorium.data.loader import collate
    from sensorium.models.unified import UnifiedConfig, UnifiedModel
    from sensorium.nn import TransformerConfig

    torch.manual_seed(0)
    config = UnifiedConfig(tokenizers={"image": {"patch": 8}, "timeseries": {"patch": 4}}, embed_dim=8,
                           trunk=TransformerConfig(dim=16, depth=1, n_heads=2, mlp_hidden=32))
    unified = UnifiedModel(config)
    unified.save(tmp_path / "model")
    model = sensorium.load(tmp_path)
    assert model.kind == "embedder" and set(model.modalities) == {"image", "timeseries"}
    series = [np.sin(np.linspace(0, k, 16, dtype=np.float32))[:, None] for k in (1.0, 5.0)]
    got = model.embed("timeseries", series)
    batch = collate([{"timeseries": s} for s in series], ["timeseries"])
    with torch.no_grad():
        want = unified.eval().encode("timeseries", batch["timeseries"].float(), batch.get("lengths", {}).get("timeseries"))
    assert torch.allclose(got, F.normalize(want, dim=-1), atol=1e-5)


def test_messages_become_the_templates_conversation():
    png = io.BytesIO()
    _picture().save(png, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    conversation, media = to_conversation([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image_url", "image_url": {"url": uri}},
                                     {"type": "text", "text": " and "}, {"type": "image", "image": _picture((0, 0, 200))}]},
    ])
    assert conversation == [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Compare <image> and <image>"}]
    assert [np.asarray(v)[24, 24].tolist() for v in media["image"]] == [[220, 30, 30], [0, 0, 200]]
    for bad, message in (([], "messages is empty"),
                         ([{"role": "robot", "content": "hi"}], r"messages\[0\]: needs a role"),
                         ([{"role": "user", "content": [{"type": "video"}]}], "unknown content part type 'video'"),
                         ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
                          "not fetched"),
                         ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                          "nothing to answer")):
        with pytest.raises(ItemError, match=message):
            to_conversation(bad)


def test_generation_options_are_checked():
    from sensorium.inference import generation_config

    assert generation_config(max_tokens=5, temperature=0.5, stop="END").stop == ["END"]
    for options, message in (({"temperature": -1}, "temperature=-1: must be >= 0"), ({"beams": 0}, "beams=0"),
                             ({"max_tokens": 0}, "max_tokens=0"), ({"top_p": 0}, "top_p=0"),
                             ({"stop": [""]}, "non-empty strings")):
        with pytest.raises(ValueError, match=message):
            generation_config(**options)


def test_list_models_names_the_packaged_defaults():
    names = {row["name"]: row for row in sensorium.list_models()}
    assert names["composer"]["kind"] == "embedder" and names["decoder"]["kind"] == "chat"
    assert json.dumps(sensorium.list_models())  # plain data: the server returns it as it is


def test_checkpoint_info_reads_sensorium_runs_too(aligned_run, capsys):
    from sensorium.cli import main

    assert main(["checkpoint", "info", str(aligned_run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {"layout": "sensorium", "name": aligned_run.name, "kind": "embedder",
                    "modalities": ["image", "text"], "dim": 16}
