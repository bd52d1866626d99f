"""Cross-check the harness's answer extraction against lmms-eval's own parsing functions on fixtures: MMBench's
`can_infer` (mmbench_evals.py), MME's `parse_pred_ans` and SEED-Bench's first-character rule.

lmms-eval does not import in Sensorium's environment (its package imports datasets, pandas, loguru, requests ...),
so this script reads the three task files out of an lmms-eval wheel and runs them with small stand-ins for the
modules they import only for logging and pandas' isna (never for the parsing). Get the wheel with
`pip download --no-deps lmms-eval -d /tmp/lmms` (the result records its version).

    PYTHONPATH=src python3 bench/bench_crosscheck.py --wheel /tmp/lmms/lmms_eval-*.whl
    -> bench/results/bench_crosscheck.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import types
import zipfile
from pathlib import Path

from _machine import RESULTS, machine

from sensorium.eval.bench.extract import choice, first_char, yes_no

OPTS = {"A": "red circle", "B": "blue square", "C": "green star", "D": "yellow triangle"}
MCQ = ["B", "b", " (C) ", "D.", "**A**", "The answer is B", "B. blue square", "I pick C: green star",
       "(D) because it has three sides", "It is D).", "Answer: C", "A", "A red circle", "A red circle is shown here",
       "A cat sits on the mat", "A or B", "(A) or (C)", "I see a blue square.", "blue square", "BLUE SQUARE",
       "red circle and green star", "purple hexagon", "", "E", "C, because green", "The picture shows a green star",
       "Option B", "B)", "(B).", "It's B, the blue square", "Neither A nor B", "I think the answer is (D).",
       "triangle", "green", "yellow triangle!", "A. red circle\nB. blue square", "answer: d", "The correct option is C."]
YES_NO = ["Yes", "No", "yes.", "No.", "Yes, there is.", "no, it is not", "y", "n", "Not really", "nope", "Yes and no",
          "There is no circle", "I don't know", "", "Maybe", "YES", "None", "noo", "not sure", "x"]
SEED = ["B", "b", "B is correct", "The answer is B", "(B)", "", "  C", "d) triangle", "Answer: A", "A"]


def _stubs() -> None:
    """Stand-ins for the modules the task files import but the parsing functions never use."""
    logger = types.SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None, debug=lambda *a, **k: None)
    sys.modules.setdefault("loguru", types.SimpleNamespace(logger=logger))  # type: ignore[arg-type]
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    pandas = types.ModuleType("pandas")
    pandas.isna = lambda x: x is None or (isinstance(x, float) and math.isnan(x))  # type: ignore[attr-defined]
    pandas.notna = lambda x: not pandas.isna(x)  # type: ignore[attr-defined]
    sys.modules.setdefault("pandas", pandas)


def _load(archive: zipfile.ZipFile, member: str, name: str) -> types.ModuleType:
    source = archive.read(member).decode()
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    module.__file__ = f"/nonexistent/{member}"  # some files compute their folder at import
    exec(compile(source, member, "exec"), module.__dict__)  # noqa: S102 - the published parsing code, run as is
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, type=Path, help="lmms_eval-*.whl (pip download --no-deps lmms-eval)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_crosscheck.json")
    args = parser.parse_args()
    _stubs()
    with zipfile.ZipFile(args.wheel) as archive:
        mmbench = _load(archive, "lmms_eval/tasks/mmbench/mmbench_evals.py", "lmms_mmbench")
        mme = _load(archive, "lmms_eval/tasks/mme/utils.py", "lmms_mme")
        seed = _load(archive, "lmms_eval/tasks/seedbench/utils.py", "lmms_seed")
        version = next((n.split("/")[0].split("-")[1].removesuffix(".dist-info") for n in archive.namelist()
                        if n.endswith(".dist-info/METADATA")), "unknown")
    evaluator = mmbench.MMBench_Evaluator()

    rows, disagree = [], []
    for answer in MCQ:
        theirs = evaluator.can_infer(answer, dict(OPTS)) or None
        ours = choice(answer, OPTS)
        rows.append({"answer": answer, "lmms_eval": theirs, "sensorium": ours.choice, "rule": ours.rule})
        if theirs != ours.choice:
            if theirs is None:
                then = "lmms-eval asks an LLM judge, then draws a random letter; sensorium reads the letter"
            elif theirs not in OPTS:
                then = "both count it wrong: lmms-eval reads a letter that is no option, sensorium leaves it unparsed"
            else:
                then = "sensorium leaves it unparsed (counted wrong)"
            disagree.append({"benchmark": "MMBench", "answer": answer, "lmms_eval": theirs, "sensorium": ours.choice,
                             "sensorium_rule": ours.rule, "note": then})
    yn_rows = []
    for answer in YES_NO:
        theirs = mme.parse_pred_ans(answer)
        theirs = None if theirs == "other" else theirs
        ours = yes_no(answer).choice
        yn_rows.append({"answer": answer, "lmms_eval": theirs, "sensorium": ours})
        if theirs != ours:
            disagree.append({"benchmark": "MME", "answer": answer, "lmms_eval": theirs, "sensorium": ours})
    seed_rows = []
    for answer in SEED:
        doc = {"answer": "B", "data_type": "image", "question_id": "q"}
        theirs = seed.seed_process_result(doc, [answer])["seed_all"]["pred"].upper() if answer.strip() else None
        theirs = theirs if theirs in OPTS else None
        ours = first_char(answer, OPTS).choice
        seed_rows.append({"answer": answer, "lmms_eval": theirs, "sensorium": ours})
        if theirs != ours:
            disagree.append({"benchmark": "SEED-Bench", "answer": answer, "lmms_eval": theirs, "sensorium": ours})
    agree = {"MMBench": sum(r["lmms_eval"] == r["sensorium"] for r in rows),
             "MME": sum(r["lmms_eval"] == r["sensorium"] for r in yn_rows),
             "SEED-Bench": sum(r["lmms_eval"] == r["sensorium"] for r in seed_rows)}
    totals = {"MMBench": len(rows), "MME": len(yn_rows), "SEED-Bench": len(seed_rows)}
    report = {"machine": machine(), "lmms_eval_version": version,
              "summary": {k: f"{agree[k]}/{totals[k]} agree" for k in agree},
              "disagreements": disagree, "mmbench": rows, "mme": yn_rows, "seed": seed_rows}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"]))
    for d in disagree:
        print(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
