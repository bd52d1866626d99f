"""`sensorium serve` as its users meet it: the real `openai` client against a running server on 127.0.0.1
(embeddings of text and of an image, chat with and without streaming), search and item content over HTTP, and
every kind of bad input answered with its status and a message naming the problem while the server keeps serving."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from _serve import ANSWERS, COLOURS, QUESTION, Server, aligned_model, chat_model, data_uri, png, wav, write_shard

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "sekret-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from sensorium.index import build

    root = tmp_path_factory.mktemp("serve")
    model = aligned_model(root / "model")
    write_shard(root / "part-000.tar")
    build(model, root / "idx", [root / "part-000.tar"], progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chat_model(root / "decoder", steps=60)
    finally:
        torch.set_num_threads(threads)
    srv = Server(str(root / "idx"), "--chat", str(root / "decoder"), "--api-key", KEY, "--max-body", "1")
    yield srv, root
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[0].url}/v1", api_key=KEY, max_retries=0, timeout=60)


def _local(root):
    from sensorium import load

    return load(root / "model")


def test_models_lists_the_embedder_and_the_decoder(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"model", "decoder"}


def test_embeddings_of_text_and_image_equal_the_library(server, client):
    srv, root = server
    local = _local(root)
    texts = ["a red square", "a blue square"]
    got = client.embeddings.create(model="model", input=texts)  # the client asks for base64 and decodes it
    want = local.embed("text", texts).numpy()
    assert [d.index for d in got.data] == [0, 1]
    assert np.allclose(np.array([d.embedding for d in got.data]), want, atol=1e-5)
    floats = client.embeddings.create(model="model", input="a red square", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, want[0], atol=1e-5)
    image = {"type": "image_url", "image_url": {"url": data_uri(png("green"))}}
    got = client.embeddings.create(model="model", input=[image, {"content": [image]}], encoding_format="float")
    want = local.embed("image", [png("green")]).numpy()[0]
    assert len(got.data) == 2 and all(np.allclose(d.embedding, want, atol=1e-5) for d in got.data)
    assert abs(np.linalg.norm(got.data[0].embedding) - 1) < 1e-5
    tone = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(300.0)).decode(), "format": "wav"}}
    got = client.embeddings.create(model="model", input=[tone, "a tone"], encoding_format="float")
    assert np.allclose(got.data[0].embedding, local.embed("audio", [wav(300.0)]).numpy()[0], atol=1e-5)
    assert np.allclose(got.data[1].embedding, local.embed("text", ["a tone"]).numpy()[0], atol=1e-5)


def _ask(colour: str) -> list[dict]:
    import _vlm

    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(_image_bytes(_vlm.image(COLOURS[colour])))}},
        {"type": "text", "text": "\n" + QUESTION}]}]


def _image_bytes(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_chat_answers_about_the_attached_image(client):
    for colour, answer in ANSWERS.items():
        reply = client.chat.completions.create(model="decoder", messages=_ask(colour), max_tokens=8, temperature=0)
        assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
        assert reply.choices[0].message.content == answer and reply.choices[0].finish_reason == "stop"
        assert reply.usage.completion_tokens >= 1
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_streams_chunks_then_usage_then_done(server, client):
    chunks = list(client.chat.completions.create(model="decoder", messages=_ask("blue"), max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}, seed=3, top_p=0.9))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWERS["blue"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    raw = httpx.post(f"{server[0].url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                     json={"model": "decoder", "messages": _ask("red"), "stream": True, "max_tokens": 4})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]") and '"content": "circle"' in raw.text.replace("\\n", "")


def test_search_items_and_content(server):
    srv, root = server
    h = {"Authorization": f"Bearer {KEY}"}
    found = httpx.post(f"{srv.url}/v1/search", headers=h, json={"query": "a yellow square", "k": 3}).json()
    top = found["data"][0]
    assert top["title"] == "a yellow square" and top["score"] == pytest.approx(1.0, abs=1e-5)
    by_image = httpx.post(f"{srv.url}/v1/search", headers=h, json={"query": {"image": data_uri(png("red"))},
                                                                   "k": 2, "modality": "image"}).json()["data"]
    assert by_image[0]["metadata"]["colour"] == "red" and by_image[0]["modality"] == "image"
    content = httpx.get(srv.url + by_image[0]["content_url"], headers=h)
    assert content.status_code == 200 and content.content == png("red")
    assert content.headers["content-type"] == "image/png"
    thumb = httpx.get(srv.url + by_image[0]["thumbnail_url"], headers=h)
    assert thumb.content[:3] == b"\xff\xd8\xff"
    item = httpx.get(f"{srv.url}/v1/items/{top['id']}", headers=h).json()
    assert item["text"] == "a yellow square" and item["metadata"]["category"] == "warm"
    audio = base64.b64encode(httpx.get(f"{srv.url}/v1/items/{by_image[0]['id'] + 8}/content", headers=h).content)
    hits = httpx.post(f"{srv.url}/v1/search", headers=h, json={"query": {"audio": audio.decode()}, "k": 1,
                                                               "where": {"colour": "red"}}).json()["data"]
    assert hits[0]["modality"] == "audio" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


BAD = [  # (method, path, json or raw body, headers, status, words the message must contain)
    ("POST", "/v1/embeddings", {"model": "model", "input": "x"}, {}, 401, "API key"),
    ("POST", "/v1/embeddings", {"model": "model", "input": "x"}, {"Authorization": "Bearer wrong"}, 401, "API key"),
    ("GET", "/metrics", None, {}, 401, "API key"),
    ("POST", "/v1/embeddings", b"x" * (2 * 2**20), None, 413, "1 MiB limit"),
    ("POST", "/v1/embeddings", {"model": "model", "input": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64,@@notbase64"}}]}, None, 400, "input[0]"),
    ("POST", "/v1/embeddings", {"model": "model", "input": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(b"not an image").decode()}}]}, None, 400, "input[0]"),
    ("POST", "/v1/embeddings", {"model": "gpt-9", "input": "x"}, None, 404, "gpt-9"),
    ("POST", "/v1/embeddings", {"model": "model", "input": []}, None, 400, "input"),
    ("POST", "/v1/embeddings", {"model": "model", "input": "   "}, None, 400, "empty"),
    ("POST", "/v1/embeddings", b"{not json", None, 400, "not JSON"),
    ("POST", "/v1/search", {"query": {"video": "AAAA"}}, None, 400, "image, text, audio"),
    ("POST", "/v1/search", {"query": "x", "modality": "smell"}, None, 400, "audio, image, text"),
    ("POST", "/v1/search", {"query": {"image": "/etc/passwd"}}, None, 400, "query.image"),
    ("POST", "/v1/search", {"query": "x", "k": 0}, None, 400, "k=0"),
    ("POST", "/v1/search", {"query": ""}, None, 400, "empty"),
    ("GET", "/v1/items/..%2F..%2Fetc%2Fpasswd/content", None, None, 404, ""),
    ("GET", "/v1/items/abc", None, None, 400, "not an item id"),
    ("GET", "/v1/items/999999/content", None, None, 404, "no item 999999"),
    ("POST", "/v1/chat/completions", {"model": "decoder", "messages": []}, None, 400, "messages"),
    ("POST", "/v1/chat/completions", {"model": "decoder", "messages": [{"role": "user", "content": "hi"}],
                                      "temperature": -1}, None, 400, "temperature"),
    ("POST", "/v1/chat/completions", {"model": "decoder", "stream": True, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]}, None, 400, "data: URI"),
    ("POST", "/v1/chat/completions", {"model": "decoder", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"RIFF").decode()}}]}]}, None, 400,
     "messages[0].content[0]"),
    ("POST", "/v1/chat/completions", {"model": "model", "messages": [{"role": "user", "content": "hi"}]}, None, 400,
     "cannot chat"),
]


@pytest.mark.parametrize("method,path,body,headers,status,words", BAD, ids=[f"{b[4]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gets_its_status_and_the_server_keeps_serving(server, method, path, body, headers, status, words):
    srv, _ = server
    headers = {"Authorization": f"Bearer {KEY}"} if headers is None else headers
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    response = httpx.request(method, srv.url + path, headers=headers, timeout=60, **kwargs)
    assert response.status_code == status, response.text
    if words:
        assert words in response.json()["error"]["message"]
    assert httpx.get(f"{srv.url}/health", timeout=10).json()["status"] == "ok"
    assert srv.proc.poll() is None


def test_metrics_count_requests_by_route_and_status(server):
    srv, _ = server
    text = httpx.get(f"{srv.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'sensorium_requests_total{method="POST",route="/v1/embeddings",status="401"}' in text
    assert 'sensorium_request_seconds_count{route="/v1/search"}' in text and "sensorium_index_items 12" in text


def test_items_added_while_serving_are_found(server, tmp_path):
    import time

    from sensorium.index import Index

    srv, root = server
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "violet.txt").write_text("a violet triangle")
    writer = Index.open(root / "idx", readonly=False)
    writer.add([tmp_path / "new"], progress=False)
    h = {"Authorization": f"Bearer {KEY}"}
    deadline = time.time() + 30
    while time.time() < deadline:  # the server picks the commit up within a second
        top = httpx.post(f"{srv.url}/v1/search", headers=h, json={"query": "a violet triangle", "k": 1}).json()["data"]
        if top and top[0]["title"] == "a violet triangle":
            break
        time.sleep(0.5)
    assert top[0]["title"] == "a violet triangle" and top[0]["id"] == 13
    assert httpx.get(f"{srv.url}/health").json()["index"] == 13
