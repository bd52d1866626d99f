"""`sensorium serve MODEL_OR_RUN [--index DIR] [--chat MODEL] [--host] [--port] [--api-key]`."""

from __future__ import annotations

import argparse
import os


def _serve(args: argparse.Namespace) -> int:
    from sensorium.serve import serve

    serve(args.model, index=args.index, chat=args.chat, host=args.host, port=args.port,
          api_key=args.api_key or os.environ.get("SENSORIUM_API_KEY") or None, max_body=int(args.max_body * 2**20),
          log_level="warning" if args.quiet else "info", threads=args.threads)
    return 0


def register(commands) -> None:
    p = commands.add("serve", _serve, "OpenAI-compatible API (/v1/embeddings, /v1/chat/completions), search over an "
                     "index (/v1/search) and a web page at /")
    p.add_argument("model", help="an index directory (serves it with its model), an embedding model (packaged name, "
                   "run or checkpoint dir) or a language decoder run")
    p.add_argument("--index", help="index directory to search (must have been built with MODEL)")
    p.add_argument("--chat", help="a language decoder run answering /v1/chat/completions")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 and /metrics (or set "
                   "SENSORIUM_API_KEY)")
    p.add_argument("--max-body", type=float, default=20, help="request body limit in MiB (default 20)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per request for embedding and search "
                   "(default 1: best for concurrent requests)")
