"""`sensorium models` (what ships and what a path holds) and `sensorium embed` (vectors for text, images, audio)."""

from __future__ import annotations

import argparse
import json
import sys


def _models(args: argparse.Namespace) -> int:
    import sensorium

    if args.model:
        print(json.dumps(sensorium.load(args.model).describe(), indent=2))
        return 0
    for row in sensorium.list_models():
        state = "installed" if row["installed"] else "not installed"
        print(f"{row['name']:<10} {row['kind']:<9} {state:<14} {row['description']}")
    print("\nload any of them, a run directory or a checkpoint directory: sensorium.load(NAME_OR_PATH)")
    return 0


def _embed(args: argparse.Namespace) -> int:
    import sensorium

    model = sensorium.load(args.model, args.device)
    if getattr(model, "kind", "") != "embedder":
        raise ValueError(f"{args.model} is a language decoder; embeddings need an embedding model (e.g. `default`)")
    rows = [(m, item) for m, items in (("text", args.text), ("image", args.image), ("audio", args.audio))
            for item in items]
    if not rows:
        raise ValueError("nothing to embed: give --text, --image or --audio (each repeatable)")
    out = []
    for modality, item in rows:
        vector = model.embed(modality, [item])[0]
        out.append({"modality": modality, "input": item, "embedding": [round(v, 6) for v in vector.tolist()]})
    if args.similarity:
        for i, a in enumerate(out):
            scores = [sum(x * y for x, y in zip(a["embedding"], b["embedding"])) for b in out]
            print(f"{a['modality']:>6} {str(a['input'])[:40]:<40} " + " ".join(f"{s:6.3f}" for s in scores))
        return 0
    json.dump({"model": str(args.model), "dim": model.dim, "data": out}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def register(commands) -> None:
    p = commands.add("models", _models, "list the packaged models, or describe the model at a path")
    p.add_argument("model", nargs="?", help="a packaged name, run directory or checkpoint directory to describe")
    p = commands.add("embed", _embed, "embed text, images or audio into a model's shared space (JSON vectors)")
    p.add_argument("model", help="`default` (packaged composer), a run directory or a checkpoint directory")
    p.add_argument("--text", action="append", default=[], help="a text (repeatable)")
    p.add_argument("--image", action="append", default=[], help="an image file (repeatable)")
    p.add_argument("--audio", action="append", default=[], help="an audio file (repeatable)")
    p.add_argument("--similarity", action="store_true", help="print the cosine similarity matrix instead")
    p.add_argument("--device", default="cpu")
