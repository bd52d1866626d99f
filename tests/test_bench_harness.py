"""The harness's file reading (VLMEvalKit TSV, bad input), CircularEval, MME's acc+, VQAv2 soft accuracy, the
exact baselines, resuming from predictions.jsonl and an external-format TSV end to end through the CLI."""

from __future__ import annotations

import json

import pytest

from _bench import NAMES, ScriptedChat, colour_rows, png_b64, write_tsv
from sensorium.cli import main
from sensorium.eval.bench import read_task, rotate, run_suite, run_task, units
from sensorium.eval.bench.api import files_fingerprint
from sensorium.eval.bench.metrics import choice_metrics, mme_metrics, soft_accuracy
from sensorium.eval.bench.runner import baseline_scorer
from sensorium.eval.bench.scoring import Generate

GOLDS = ["red", "blue", "green", "yellow", "purple", "cyan"]


def knows_colours(text, messages):
    """Answers with the letter of the option naming the picture's true colour (read from the image part)."""
    picture = messages[0]["content"][0]["image"]
    r, g, b = picture.getpixel((0, 0))
    from sensorium.data.world import COLORS
    colour = next(c for c, rgb in COLORS.items() if rgb == (r, g, b))
    line = next(ln for ln in text.splitlines() if ln.endswith(f". {colour}"))
    return line[0]


def test_tsv_reader_reads_vlmevalkit_layout(tmp_path):
    path = write_tsv(tmp_path / "mc.tsv", colour_rows(GOLDS[:3]) + [{
        "index": 3, "image": "0", "question": "Same picture as row 0?", "hint": "a hint", "A": "red", "B": "blue",
        "C": "", "D": "nan", "answer": "A", "category": "warm", "l2-category": "colour", "split": "dev"}])
    task = read_task(path)
    assert task.kind == "mcq" and len(task) == 4 and task.name == "mc"
    first, last = task.items[0], task.items[3]
    assert first.options == {"A": "red", "B": "green", "C": "blue", "D": "yellow"} and first.answer == "A"
    assert last.options == {"A": "red", "B": "blue"}  # empty and 'nan' options are absent
    assert last.hint == "a hint" and last.l2 == "colour"
    assert last.media[0].key() == first.media[0].key()  # a short image cell reuses that row's picture
    assert last.media[0].value().getpixel((3, 3)) == (220, 40, 40)


def test_missing_column_names_column_and_file(tmp_path):
    rows = colour_rows(GOLDS[:2])
    for r in rows:
        r.pop("answer")
    path = write_tsv(tmp_path / "no_answer.tsv", rows)
    with pytest.raises(ValueError, match=r"no_answer\.tsv: missing column 'answer'"):
        read_task(path, "mcq")


def test_corrupt_image_is_a_counted_skip_or_an_error_with_strict(tmp_path):
    rows = colour_rows(GOLDS[:3])
    rows[1]["image"] = "iVBORw0KGgo" + "A" * 40 + "!!"  # not base64
    rows[2]["image"] = png_b64("green")[:60] + "AAAA"  # base64, but a truncated PNG
    path = write_tsv(tmp_path / "bad.tsv", rows)
    task = read_task(path)
    assert [it.index for it in task.items] == ["0"]
    assert [(s["row"], s["index"]) for s in task.skipped] == [(2, "1"), (3, "2")]
    assert "not valid base64" in task.skipped[0]["reason"] and "image" in task.skipped[1]["reason"]
    with pytest.raises(ValueError, match=r"bad\.tsv row 2 \(index 1\): image is not valid base64"):
        read_task(path, strict=True)


def test_answer_letter_outside_the_options_names_the_row(tmp_path):
    rows = colour_rows(GOLDS[:3])
    rows[2]["answer"] = "E"
    with pytest.raises(ValueError, match=r"row 3 \(index 2\): answer 'E' is not one of the row's options \(A, B, C, D\)"):
        read_task(write_tsv(tmp_path / "x.tsv", rows))


def test_rotations_move_the_answer_with_its_text(tmp_path):
    item = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(["green"]))).items[0]
    assert [u.options[u.answer] for u in units([item], circular=True)] == ["green"] * 4
    assert item.options == {"A": "green", "B": "red", "C": "blue", "D": "yellow"} and item.answer == "A"
    turned = rotate(item, 1)
    assert turned.options == {"A": "red", "B": "blue", "C": "yellow", "D": "green"} and turned.answer == "D"
    assert [u.id for u in units([item], circular=True)] == ["0", "1000000", "2000000", "3000000"]


def test_circular_eval_rejects_a_position_bias(tmp_path):
    task = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(GOLDS)))
    always_a = run_task(task, Generate(ScriptedChat(lambda t, m: "A")), tmp_path / "a", circular=True, progress=False)
    gold_is_a = sum(it.answer == "A" for it in task.items)
    assert always_a["vanilla_accuracy"] == pytest.approx(100 * gold_is_a / 6, abs=0.01) and gold_is_a > 0
    assert always_a["accuracy"] == 0.0 and always_a["rotations"] == 24
    knows = run_task(task, Generate(ScriptedChat(knows_colours)), tmp_path / "k", circular=True, progress=False)
    assert knows["accuracy"] == 100.0 and knows["by_category"]["warm"] == {"n": 2, "accuracy": 100.0}


def test_choice_metrics_by_category_l2_and_unparsed():
    recs = [{"index": "1", "category": "a", "l2": "x", "correct": 1.0, "parsed": "A", "raw": "A"},
            {"index": "2", "category": "a", "l2": "y", "correct": 0.0, "parsed": None, "raw": "??"},
            {"index": "3", "category": "b", "l2": "y", "correct": 1.0, "parsed": "B", "raw": "B"}]
    m = choice_metrics(recs, [])
    assert m["accuracy"] == pytest.approx(66.67) and m["unparsed"] == 1
    assert m["by_category"] == {"a": {"n": 2, "accuracy": 50.0}, "b": {"n": 1, "accuracy": 100.0}}
    assert m["by_l2_category"]["y"] == {"n": 2, "accuracy": 50.0}


def test_mme_acc_plus_and_family_sums():
    def rec(cat, pic, ok):
        return {"index": f"{cat}{pic}{ok}{len(recs)}", "category": cat, "group": pic, "correct": float(ok)}
    recs: list = []
    for cat, pic, ok in [("existence", "p1", 1), ("existence", "p1", 1), ("existence", "p2", 1),
                         ("existence", "p2", 0), ("code_reasoning", "p3", 0), ("code_reasoning", "p3", 0)]:
        recs.append(rec(cat, pic, ok))
    m = mme_metrics(recs, [])
    assert m["mme"]["existence"] == {"n": 4, "pictures": 2, "acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert m["perception"] == 125.0 and m["cognition"] == 0.0 and m["acc_plus"] == pytest.approx(33.33)


def test_vqa_soft_accuracy():
    ten = ["2"] * 3 + ["3"] * 7
    assert soft_accuracy("two", ten) == pytest.approx(0.9)  # 3 of 10: each leave-one-out subset holds 2 or 3
    assert soft_accuracy("3", ten) == 1.0 and soft_accuracy("4", ten) == 0.0
    assert soft_accuracy("The circle.", ["circle"]) == 1.0 and soft_accuracy("circles", ["circle"]) == 0.0


def test_baselines_are_exact_expected_values(tmp_path):
    task = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(GOLDS)))
    rnd = run_task(task, baseline_scorer("random", task), tmp_path / "r", circular=True, progress=False)
    assert rnd["vanilla_accuracy"] == 25.0 and rnd["accuracy"] == pytest.approx(100 * 0.25 ** 4, abs=0.01)
    # fitted on the file itself (no priors file): within a category only the answers seen there score, so the
    # options tie 2 ways (4 items) or 3 ways (2 items): (4 / 2 + 2 / 3) / 6, above chance from the leak alone
    freq = run_task(task, baseline_scorer("frequent", task), tmp_path / "f", progress=False)
    assert freq["accuracy"] == pytest.approx(100 * (4 / 2 + 2 / 3) / 6, abs=0.01) and "own answers" in freq["priors"]
    blind = run_task(task, baseline_scorer("blind", task), tmp_path / "b", progress=False)
    assert blind["accuracy"] == freq["accuracy"]  # one question text for all: no more to learn from it


def test_resume_asks_only_what_is_missing_and_refuses_another_run(tmp_path):
    task = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(GOLDS)))
    first = ScriptedChat(knows_colours)
    run_task(task, Generate(first), tmp_path / "out", limit=2, circular=True, progress=False)
    assert first.calls == 8
    again = ScriptedChat(knows_colours)
    full = run_task(task, Generate(again), tmp_path / "out", circular=True, progress=False)
    assert again.calls == 16 and full["n"] == 6 and full["accuracy"] == 100.0
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["raw"] in "ABCD"
    with pytest.raises(ValueError, match="written for another run.*circular: True -> False"):
        run_task(task, Generate(ScriptedChat(knows_colours)), tmp_path / "out", progress=False)
    weights = tmp_path / "model"  # retrained weights at the same path are another model
    weights.mkdir()
    (weights / "w.bin").write_bytes(b"1")
    before = files_fingerprint(weights)
    (weights / "w.bin").write_bytes(b"22")
    assert before and files_fingerprint(weights) != before and files_fingerprint(tmp_path / "none") == ""
    with pytest.raises(ValueError, match="model_id: '' -> "):
        run_task(task, Generate(ScriptedChat(knows_colours)), tmp_path / "out", circular=True,
                 model_id=files_fingerprint(weights), progress=False)


def test_unparsed_answers_are_counted_and_shown(tmp_path):
    task = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(GOLDS[:4])))
    r = run_task(task, Generate(ScriptedChat(lambda t, m: "I cannot tell")), tmp_path / "u", progress=False)
    assert r["accuracy"] == 0.0 and r["unparsed"] == 4
    md = (tmp_path / "u" / "results.md").read_text()
    assert "unparsed answers (counted wrong): 4" in md and "'I cannot tell'" in md


def test_yesno_file_detected_and_scored_mme_style(tmp_path):
    rows = []
    for i, colour in enumerate(["red", "blue"]):
        other = "green"
        rows += [{"index": 2 * i, "image": png_b64(colour), "question": f"Is the picture {colour}? Please answer yes "
                  "or no.", "answer": "Yes", "category": "color"},
                 {"index": 2 * i + 1, "image": str(2 * i), "question": f"Is the picture {other}? Please answer yes "
                  "or no.", "answer": "No", "category": "color"}]
    task = read_task(write_tsv(tmp_path / "yn.tsv", rows))
    assert task.kind == "yesno" and task.items[0].group == task.items[1].group != task.items[2].group
    r = run_task(task, Generate(ScriptedChat(lambda t, m: "Yes")), tmp_path / "yn", progress=False)
    assert r["mme"]["color"] == {"n": 4, "pictures": 2, "acc": 50.0, "acc_plus": 0.0, "score": 50.0}
    assert r["perception"] == 50.0


def test_external_tsv_end_to_end_through_the_cli(tmp_path, capsys):
    path = write_tsv(tmp_path / "MMBench_like.tsv", colour_rows(GOLDS))
    out = tmp_path / "res"
    assert main(["-q", "bench", "run", str(path), "--model", "baseline:random", "--out", str(out), "--circular"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["accuracy"] == pytest.approx(0.39) and result["n"] == 6 and result["unparsed"] == 0
    assert set(result["by_category"]) == {"warm", "cool"} and (out / "results.md").is_file()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 24
    assert "MMBench_like" in capsys.readouterr().out
    rows = [{k: v for k, v in r.items() if k != "question"} for r in colour_rows(GOLDS[:2])]
    bad = write_tsv(tmp_path / "broken.tsv", rows)
    assert main(["-q", "bench", "run", str(bad), "--model", "baseline:random", "--out", str(tmp_path / "b"),
                 "--kind", "mcq"]) == 1
    assert "broken.tsv: missing column 'question'" in capsys.readouterr().err


def test_suite_manifest_writes_per_task_results_and_a_summary(tmp_path):
    write_tsv(tmp_path / "colours.tsv", colour_rows(GOLDS))
    (tmp_path / "priors.jsonl").write_text("".join(json.dumps({"category": "warm", "question": "x", "answer": c}) + "\n"
                                                   for c in ["red"] * 5 + NAMES))
    (tmp_path / "bench.json").write_text(json.dumps({"name": "mini", "tasks": [
        {"name": "colours", "file": "colours.tsv", "kind": "mcq", "priors": "priors.jsonl"},
        {"name": "colours-seed", "file": "colours.tsv", "kind": "mcq", "extract": "first-char"}]}))
    r = run_suite(str(tmp_path / "bench.json"), "baseline:frequent", tmp_path / "out", progress=False)
    assert set(r["tasks"]) == {"colours", "colours-seed"} and (tmp_path / "out" / "colours" / "results.json").is_file()
    # the priors say 'red' (for warm questions, and overall for the unseen cool ones): right on the red picture only
    colours = r["tasks"]["colours"]
    assert colours["by_category"]["warm"] == {"n": 2, "accuracy": 50.0} and colours["accuracy"] == pytest.approx(16.67)
    assert "priors.jsonl" in r["tasks"]["colours"]["priors"]


def test_open_vqa_file_with_ten_answers_scores_vqav2_soft_accuracy(tmp_path):
    rows = [{"index": 0, "image": png_b64("red"), "question": "How many?", "answers": ["2"] * 3 + ["3"] * 7,
             "category": "count"},
            {"index": 1, "image": png_b64("blue"), "question": "What colour?", "answer": "blue", "category": "colour"}]
    write_tsv(tmp_path / "vqa.jsonl", rows)
    task = read_task(tmp_path / "vqa.jsonl")
    assert task.kind == "vqa" and task.items[0].references() == ["2"] * 3 + ["3"] * 7
    r = run_task(task, Generate(ScriptedChat(lambda t, m: "Two." if "many" in t else "Blue")), tmp_path / "v",
                 progress=False)
    assert r["by_category"] == {"colour": {"n": 1, "accuracy": 100.0}, "count": {"n": 1, "accuracy": 90.0}}
    assert r["accuracy"] == 95.0 and r["unparsed"] == 0


def test_questions_the_model_refuses_are_counted_wrong_and_shown(tmp_path):
    def picky(text, messages):
        if messages[0]["content"][0]["image"].getpixel((0, 0)) == (140, 60, 200):  # the purple picture
            raise ValueError("the prompt is 300 tokens, longer than the decoder's context of 256")
        return knows_colours(text, messages)
    task = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(GOLDS)))
    r = run_task(task, Generate(ScriptedChat(picky)), tmp_path / "e", progress=False)
    assert r["errors"] == 1 and r["unparsed"] == 0 and r["accuracy"] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert "context of 256" in (tmp_path / "e" / "results.md").read_text()
