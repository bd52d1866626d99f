"""Install a quickstart run's aligned heads as the packaged composer (`sensorium.load("default")`): float16 weights,
the config, and a card.json with the run's recipe, test-split retrieval and machine. The towers are not copied:
they are the packaged encoders every install already has.

    python bench/package_composer.py runs/quickstart
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from sensorium.core.files import save_safetensors
from sensorium.inference.load import PACKAGED
from sensorium.models.aligned import AlignedModel

HEADLINE_PAIRS = ("text->image", "image->text", "audio->image", "audio->text", "text->audio")


def headline(report: dict) -> dict:
    """Test-split R@1/R@10 of the main pairs beside ridge, CCA and chance R@10, from a quickstart report."""
    base = report.get("baselines", {})
    rows = {}
    for pair, row in (report.get("retrieval") or {}).items():
        if pair in HEADLINE_PAIRS:
            rows[pair] = {"R@1": row["R@1"], "R@10": row["R@10"],
                          "ridge_R@10": base.get("ridge", {}).get(pair, {}).get("R@10"),
                          "cca_R@10": base.get("cca", {}).get(pair, {}).get("R@10"),
                          "chance_R@10": report.get("chance", {}).get(pair, {}).get("R@10")}
    return rows


def package(run: Path, out: Path) -> dict:
    folder = run / "model" if (run / "model" / "config.json").is_file() else run
    model = AlignedModel.load(folder)
    params = sum(p.numel() for p in model.parameters())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    save_safetensors(state, tmp / "model.safetensors")
    (tmp / "model.safetensors").chmod(0o644)
    shutil.copy(folder / "config.json", tmp / "config.json")
    report = json.loads((run / "report.json").read_text()) if (run / "report.json").is_file() else {}
    card = {"name": "composer", "recipe": "configs/quickstart.yaml (the built-in defaults)",
            "command": "sensorium quickstart; python bench/package_composer.py runs/quickstart",
            "parameters": params, "weights": "float16 safetensors (cast to float32 on load)",
            "towers": model.config.towers, "test_split": headline(report),
            "classification": report.get("classification"), "timings": report.get("timings"),
            "machine": report.get("machine")}
    (tmp / "card.json").write_text(json.dumps(card, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a quickstart run directory (runs/quickstart)")
    parser.add_argument("--out", type=Path, default=PACKAGED["composer"].path)
    args = parser.parse_args()
    card = package(args.run, args.out)
    print(json.dumps({"out": str(args.out), "parameters": card["parameters"], "test_split": card["test_split"]},
                     indent=1))


if __name__ == "__main__":
    main()
