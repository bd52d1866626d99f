"""`sensorium serve`: an OpenAI-compatible HTTP API (embeddings, chat completions), any-to-any search over a
persistent index, and a web page, on FastAPI + uvicorn."""

from sensorium.serve.app import create_app, remote_query
from sensorium.serve.run import load_for_serving, serve

__all__ = ["create_app", "load_for_serving", "remote_query", "serve"]
