"""The FastAPI app: OpenAI-compatible /v1/embeddings and /v1/chat/completions, /v1/search over a persistent index,
items and their content, /v1/models, /health, /metrics (Prometheus) and the web page at `/` (static files shipped
in the package, no CDN). Every endpoint calls the same library functions as the CLI and the Python API."""


import json
import threading
import time
from pathlib import Path
from typing import Any

from sensorium.index import ContentError, Index, read_content, search
from sensorium.inference import ChatModel, Embedder
from sensorium.inference.items import ItemError, decode_base64
from sensorium.serve.guard import BodyTooLarge, Guard, Metrics, error_body
from sensorium.serve.openai_api import chat_completion, chat_stream, embeddings

STATIC = Path(__file__).parent / "static"
MAX_BODY = 20 * 2**20


class NotFound(LookupError):
    """An unknown model, item or route: 404 with the message."""


def remote_query(query: Any) -> Any:
    """A search query from a client: media only as data (a data: URI or base64), never a path on the server."""
    if isinstance(query, str) or not isinstance(query, dict) or len(query) != 1:
        return query
    (kind, value), = query.items()
    if kind in ("text", "embedding", "id"):
        return query
    if not isinstance(value, str) or not value:
        raise ItemError(f"query.{kind}: send the {kind} as a data: URI or base64 text")
    return {kind: value if value.startswith("data:") else decode_base64(value, f"query.{kind}")}


def create_app(embedder: Embedder | None = None, index: Index | None = None, chat: ChatModel | None = None,
               api_key: str | None = None, max_body: int = MAX_BODY) -> Any:
    """The ASGI app serving whichever of an embedding model, an index (which brings its model) and a chat model."""
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
    from fastapi.staticfiles import StaticFiles

    if index is not None and embedder is None:
        embedder = index.model
    if embedder is None and chat is None:
        raise ValueError("nothing to serve: give an embedding model, an index or a chat model")
    metrics = Metrics()
    live = {"index": index, "checked": time.monotonic()}
    reload_lock = threading.Lock()

    def current() -> Index | None:
        """The index as last committed: a writer's commit (`sensorium index add`) is picked up within a second by
        opening it anew; requests in flight keep the object they started with."""
        idx = live["index"]
        if idx is None or time.monotonic() - live["checked"] < 1.0:
            return idx
        with reload_lock:
            live["checked"] = time.monotonic()
            with idx.meta.lock:
                found = idx.meta.db.execute("SELECT value FROM state WHERE key='generation'").fetchone()
            if found and json.loads(found[0]) != idx.state["generation"]:
                live["index"] = Index.open(idx.root, model=idx.model)
        return live["index"]

    if index is not None:
        metrics.gauges["sensorium_index_items"] = lambda: live["index"].count
    chat_lock = threading.Lock()
    app = FastAPI(title="Sensorium", docs_url="/docs", redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def fail(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse(json.loads(error_body(status, message, kind)), status_code=status)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return fail(413, str(exc))

    @app.exception_handler(ValueError)
    async def _bad(_: Request, exc: ValueError) -> JSONResponse:
        return fail(400, str(exc))

    @app.exception_handler(LookupError)
    async def _missing(_: Request, exc: LookupError) -> JSONResponse:
        return fail(404, str(exc.args[0] if exc.args else exc), "not_found_error")

    @app.exception_handler(FileNotFoundError)
    async def _gone(_: Request, exc: FileNotFoundError) -> JSONResponse:
        return fail(404, str(exc), "not_found_error")

    @app.exception_handler(Exception)
    async def _broken(_: Request, exc: Exception) -> JSONResponse:
        return fail(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            raise ItemError("body: empty; send a JSON object")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ItemError(f"body: not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise ItemError("body: must be a JSON object")
        return body

    def models() -> list[dict[str, Any]]:
        out = []
        for model in (embedder, chat):
            if model is not None:
                out.append({"id": model.name, "object": "model", "created": int(metrics.started), "owned_by": "sensorium",
                            **{k: v for k, v in model.describe().items() if k != "name"}})
        return out

    def pick(body: dict[str, Any], kind: type, what: str) -> Any:
        wanted = body.get("model")
        model = embedder if kind is Embedder else chat
        names = [m["id"] for m in models()]
        if wanted is not None and not isinstance(wanted, str):
            raise ItemError("model: must be a string")
        if model is None or (wanted and wanted != model.name and wanted != "default"):
            if wanted in names:
                raise ItemError(f"model: {wanted} cannot {what}")
            raise NotFound(f"model {wanted!r} not found; this server has {', '.join(names)}" if wanted else
                           f"no model here can {what}; this server has {', '.join(names)}")
        return model

    def item_of(item_id: str) -> Any:
        index = current()
        if index is None:
            raise NotFound("no index loaded (sensorium serve ... --index DIR)")
        if not item_id.isdigit():
            raise ItemError(f"id: {item_id!r} is not an item id")
        record = index.get(int(item_id))
        if record is None:
            raise NotFound(f"no item {item_id}")
        return record

    def public(record: Any, score: float | None = None) -> dict[str, Any]:
        out = record.public()
        out.update(content_url=f"/v1/items/{record.id}/content", object="item")
        if record.modality == "image":
            out["thumbnail_url"] = f"/v1/items/{record.id}/thumbnail"
        if score is not None:
            out["score"] = round(score, 6)
        return out

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        index = current()
        return {"status": "ok", "models": [m["id"] for m in models()], "index": index.count if index else None,
                "search": index is not None, "chat": chat is not None,
                "modalities": embedder.modalities if embedder else [],
                "index_modalities": index.meta.counts() if index else {}}

    @app.get("/metrics")
    async def prometheus() -> Any:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": models()}

    @app.post("/v1/embeddings")
    async def embed(request: Request) -> Any:
        body = await body_of(request)
        model = pick(body, Embedder, "embed")
        return JSONResponse(await run_in_threadpool(embeddings, model, body))  # a Response skips FastAPI's encoder

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await body_of(request)
        model = pick(body, ChatModel, "chat")
        if not body.get("stream"):
            def answer() -> dict[str, Any]:
                with chat_lock:
                    return chat_completion(model, body)
            return JSONResponse(await run_in_threadpool(answer))

        def start() -> Any:
            chat_lock.acquire()
            try:
                events = chat_stream(model, body)
            except BaseException:
                chat_lock.release()
                raise

            def locked() -> Any:
                try:
                    yield from events
                finally:
                    chat_lock.release()
            return locked()

        events = await run_in_threadpool(start)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/search")
    async def search_items(request: Request) -> Any:
        index = current()
        if index is None:
            raise NotFound("no index loaded: start the server with an index (sensorium serve INDEX_DIR)")
        body = await body_of(request)
        if "query" not in body:
            raise ItemError("query: missing (text, {\"image\": data-URI}, {\"audio\": base64}, {\"id\": n})")
        query = remote_query(body["query"])
        k = body.get("k", 10)
        start = time.perf_counter()
        hits = await run_in_threadpool(search, index, query, k, body.get("modality"), body.get("where"))
        return JSONResponse({"object": "list", "data": [public(h.record, h.score) for h in hits],
                             "took_ms": round((time.perf_counter() - start) * 1e3, 3),
                             "model": index.state["model"]["name"]})

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str) -> dict[str, Any]:
        return public(item_of(item_id))

    @app.get("/v1/items/{item_id}/content")
    async def content(item_id: str) -> Any:
        record = item_of(item_id)
        try:
            data, mime = await run_in_threadpool(read_content, record)
        except ContentError as exc:
            raise NotFound(str(exc)) from None
        return Response(data, media_type=mime, headers={"Cache-Control": "max-age=3600"})

    @app.get("/v1/items/{item_id}/thumbnail")
    async def thumb(item_id: str) -> Any:
        record = item_of(item_id)
        data = current().meta.thumb(record.id)
        if data is None:
            raise NotFound(f"item {record.id} ({record.modality}) has no thumbnail")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return Guard(app, metrics, api_key, max_body)
