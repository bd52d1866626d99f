"""`sensorium vlm train|eval` (language decoder recipes) and `sensorium chat RUN --image P "question"`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read_media(path: str, modality: str) -> Any:
    """Decode a file through the modality registry; a file of another modality or undecodable bytes is an error
    naming the file."""
    from sensorium import modalities

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such {modality} file")
    ext = file.name.split(".", 1)[1] if "." in file.name else ""
    found = modalities.for_extension(ext)
    if found is None or found.name != modality:
        raise ValueError(f"{path}: .{ext} is not a {modality} file (it is {found.name if found else 'unknown'})")
    try:
        return found.decode(file.read_bytes(), ext.lower())
    except modalities.DecodeError as exc:
        raise modalities.DecodeError(f"{path}: cannot decode as {modality}: {exc}") from None


def _chat(args: argparse.Namespace) -> int:
    from sensorium.core.device import check_device
    from sensorium.inference.chat import generation_config
    from sensorium.models.template import placeholder
    from sensorium.models.vlm import VisionLanguageModel

    config = generation_config(max_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                               top_k=args.top_k, beams=args.beams, stop=list(args.stop), seed=args.seed)
    check_device(args.device, "--device")
    if not args.question.strip() and not (args.image or args.audio):
        raise ValueError("the question is empty; ask something, e.g. \"What is in the picture?\"")
    model = VisionLanguageModel.load(args.run, args.device)
    media = {m: [read_media(p, m) for p in paths] for m, paths in (("image", args.image), ("audio", args.audio))
             if paths}
    text = args.question
    if not any(placeholder(m) in text for m in media):
        text = "".join(placeholder(m) * len(v) for m, v in media.items()) + ("\n" if media else "") + text
    conversation = [{"role": "user", "content": text}]
    if args.beams > 1:
        print(model.generate([conversation], [media], config)[0].text)
        return 0
    for piece in model.stream(conversation, media, config):
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
    p = commands.add("chat", _chat, "ask a trained language decoder about images / audio (streams the answer)")
    p.add_argument("run", help="run directory or saved model directory")
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
