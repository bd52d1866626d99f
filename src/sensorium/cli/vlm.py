"""`sensorium vlm train|eval` (language decoder recipes) and `sensorium chat RUN --image P "question"`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any


def question_parts(question: str, media: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The question as OpenAI-style content parts: media files go where their `<image>`/`<audio>` placeholders
    stand in the text, or in front of it when it has none; the counts must agree."""
    tokens = re.split(r"(<image>|<audio>)", question)
    used = {m: [x for x in tokens if x == f"<{m}>"] for m in media}
    parts: list[dict[str, Any]] = []
    if not any(used.values()):
        parts = [{"type": m, m: path} for m, paths in media.items() for path in paths]
        return parts + [{"type": "text", "text": question}]
    for m, paths in media.items():
        if len(used[m]) != len(paths):
            raise ValueError(f"{len(used[m])} <{m}> placeholder(s) in the question but {len(paths)} {m} file(s) given")
    queues = {m: list(paths) for m, paths in media.items()}
    for token in tokens:
        modality = token[1:-1] if token in ("<image>", "<audio>") else None
        if modality is None:
            if token:
                parts.append({"type": "text", "text": token})
        elif not queues.get(modality):
            raise ValueError(f"a <{modality}> placeholder in the question but no --{modality} file given")
        else:
            parts.append({"type": modality, modality: queues[modality].pop(0)})
    return parts


def _chat(args: argparse.Namespace) -> int:
    import sensorium
    from sensorium.core.device import check_device
    from sensorium.inference.chat import generation_config

    options = dict(max_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                   stop=args.stop, seed=args.seed, beams=args.beams)
    generation_config(**options)  # checked before the model loads
    check_device(args.device, "--device")
    if not args.question.strip() and not (args.image or args.audio):
        raise ValueError("the question is empty; ask something, e.g. \"What is in the picture?\"")
    model = sensorium.load(args.model, args.device)
    if getattr(model, "kind", "") != "chat":
        raise ValueError(f"{args.model} is an embedding model ({', '.join(model.modalities)}); chat needs a language "
                         "decoder run (sensorium train vlm) or the packaged `decoder`")
    media = {m: paths for m, paths in (("image", args.image), ("audio", args.audio)) if paths}
    messages = [{"role": "user", "content": question_parts(args.question, media)}]
    if args.beams > 1:
        print(model.chat(messages, **options).text)
        return 0
    for piece in model.stream(messages, **options):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _train(args: argparse.Namespace) -> int:
    from sensorium.core.config import load_config
    from sensorium.train.vlm import VLMRecipe, run_recipe

    recipe = load_config(VLMRecipe, args.config, args.overrides)
    report = run_recipe(recipe, args.run, progress=not args.quiet, evaluate=not args.no_eval)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "examples"} if isinstance(v, dict) else v
                      for k, v in report.items()}, indent=2))
    print(f"model saved to {Path(args.run) / 'model'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from sensorium.core.config import load_config
    from sensorium.core.device import check_device
    from sensorium.eval.vlm import evaluate_data
    from sensorium.models.vlm import VisionLanguageModel
    from sensorium.train.vlm import VLMRecipe, attach, prepare_data

    check_device(args.device, "--device")
    run = Path(args.run)
    if not (run / "recipe.yaml").is_file():
        raise FileNotFoundError(f"{run}: no recipe.yaml; expected a run directory of `sensorium vlm train`")
    recipe = load_config(VLMRecipe, run / "recipe.yaml", [f"device={args.device}"])
    model = VisionLanguageModel.load(run, args.device)
    report: dict[str, Any] = {"n": 0}
    for name, prepared in prepare_data(recipe, recipe.evaluate or list(recipe.data)).items():
        attach(model, prepared, recipe, run)
        report[name] = evaluate_data(model, prepared, recipe, limit=args.n)
        report["n"] += report[name]["n"]
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def register(commands) -> None:
    p = commands.add("vlm", _train, "train a language decoder over modalities (towers -> projectors -> LM) from a "
                     "recipe", group="train", overrides=True, example="stages.0.optim.steps=100 device=cuda")
    p.add_argument("run", help="run directory (tokenizer.json, checkpoints, metrics, model/, eval.json)")
    p.add_argument("--config", default=None, help="YAML recipe (see configs/vlm-*.yaml)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    p = commands.add("eval", _eval, "VQA / captioning scores of a trained run on its recipe's val data", group="vlm")
    p.add_argument("run", help="run directory of `sensorium vlm train`")
    p.add_argument("--n", type=int, default=None, help="evaluate at most this many questions / images")
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--device", default="cpu")
    p = commands.add("chat", _chat, "ask a language decoder about images / audio (streams the answer)")
    p.add_argument("model", help="`decoder` (packaged), a `sensorium train vlm` run, or a saved model directory")
    p.add_argument("question", help="the question; <image>/<audio> placeholders are added in front if absent")
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several)")
    p.add_argument("--audio", action="append", default=[], help="audio file (repeat for several)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--beams", type=int, default=1, help="beam search with this many beams")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu")
