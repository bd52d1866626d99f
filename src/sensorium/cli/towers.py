"""`sensorium towers ...`: list towers, check the packaged ones, prepare and train the speech tower."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import save_file

from sensorium.core.config import load_config
from sensorium.core.device import check_device
from sensorium.data.shards import iter_samples
from sensorium.encoders import tower_names
from sensorium.encoders.base import build_tower
from sensorium.train.speech_tower import CorpusConfig, SpeechTrainConfig, build_corpus, run


def _list(args: argparse.Namespace) -> int:

    for name in tower_names():
        print(name)
    return 0


def _speech_corpus(args: argparse.Namespace) -> int:
    """Corpus JSON (texts + voices) and MiniLM teacher embeddings of every distinct text."""
    captions = {s: [x["text"] for x in iter_samples(Path(args.data) / s, want=["text"]) if "text" in x]
                for s in ("train", "val")}
    corpus = build_corpus(captions["train"], captions["val"], CorpusConfig(words=args.words, phrases=args.phrases,
                                                                          voices_per_caption=args.voices))
    texts = sorted({item["text"] for s in ("train", "val") for item in corpus[s]})
    corpus["teacher_texts"] = texts
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.json").write_text(json.dumps(corpus))
    embeddings = build_tower("minilm-l6").encode(texts, batch_size=256)
    save_file({"embeddings": embeddings.half().contiguous()}, str(out / "teacher.safetensors"))
    print(json.dumps({"train_clips": len(corpus["train"]), "val_clips": len(corpus["val"]), "texts": len(texts)}))
    return 0


def _train_speech(args: argparse.Namespace) -> int:

    config = load_config(SpeechTrainConfig, None, args.overrides)
    check_device(args.device, "--device")
    card = run(args.corpus, args.teacher, args.out, config, device=args.device, workers=args.workers,
               progress=not args.quiet, deadline_s=args.deadline_s)
    print(json.dumps({k: card[k] for k in ("trained_on", "timings", "final_val")}, indent=2))
    return 0


def register(commands) -> None:
    commands.add("list", _list, "list registered towers", group="towers")
    p = commands.add("speech-corpus", _speech_corpus, "write the speech-tower corpus and MiniLM teacher targets",
                     group="towers")
    p.add_argument("--data", default="data/clipart", help="clipart shards folder (train/ and val/)")
    p.add_argument("--out", default="runs/speech-corpus")
    p.add_argument("--words", type=int, default=6000)
    p.add_argument("--phrases", type=int, default=8000)
    p.add_argument("--voices", type=int, default=4, help="voices per training caption")
    p = commands.add("train-speech", _train_speech, "synthesise the corpus and distil MiniLM into a speech encoder",
                     group="towers", overrides=True, example="steps=2000 encoder.width=256")
    p.add_argument("--corpus", default="runs/speech-corpus/corpus.json")
    p.add_argument("--teacher", default="runs/speech-corpus/teacher.safetensors")
    p.add_argument("--out", default="src/sensorium/encoders/weights/speech-minilm.safetensors")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=16, help="parallel espeak-ng processes")
    p.add_argument("--deadline-s", type=float, default=0.0, help="finish the whole run within this many seconds")
