"""Each scoring mode of the harness on real model objects: generation through a ChatModel, per-option
log-likelihood under a VisionLanguageModel (checked against its own training loss), similarity in an Embedder's
space (a toy space where the answer is known), retrieval ranks; and World-Bench: deterministic files whose
answers agree with the scene graph."""

from __future__ import annotations

import json

import pytest
import torch

from _bench import ColourEmbedder, colour_rows, png_b64, write_tsv
from _vlm import model as tiny_vlm
from sensorium.data.world import generate_scene
from sensorium.eval.bench import read_task, resolve, run_task, units
from sensorium.eval.bench.prompts import messages, prompt
from sensorium.eval.bench.scoring import Generate, Likelihood, Similarity, item_media
from sensorium.eval.bench.world import WorldBenchConfig, _rng, build
from sensorium.eval.bench.world_questions import image_mcq
from sensorium.inference import ChatModel

GOLDS = ["red", "blue", "green", "yellow", "purple", "cyan"]


def test_similarity_answers_from_the_shared_space(tmp_path):
    task = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(GOLDS)))
    r = run_task(task, Similarity(ColourEmbedder()), tmp_path / "s", circular=True, progress=False)
    assert r["accuracy"] == 100.0 and r["vanilla_accuracy"] == 100.0 and r["scoring"] == "similarity"
    rec = json.loads((tmp_path / "s" / "predictions.jsonl").read_text().splitlines()[0])
    assert rec["parsed"] == rec["answer"] and rec["scores"][rec["answer"]] == max(rec["scores"].values())


def test_similarity_ties_score_their_expected_value(tmp_path):
    """'Is it red? Yes' and 'Is it red? No' embed alike in a colour space: a tie, worth 1/2, never a coin flip."""
    rows = [{"index": i, "image": png_b64(c), "question": f"Is the picture {c}?", "answer": "yes", "category": "color"}
            for i, c in enumerate(["red", "blue"])]
    task = read_task(write_tsv(tmp_path / "yn.tsv", rows))
    r = run_task(task, Similarity(ColourEmbedder()), tmp_path / "yn", progress=False)
    assert r["accuracy"] == 50.0
    assert json.loads((tmp_path / "yn" / "predictions.jsonl").read_text().splitlines()[0])["ties"] == ["yes", "no"]


def test_retrieval_and_classification_by_similarity(tmp_path):
    rows = [{"index": i, "image": png_b64(c), "captions": [f"a {c} picture", f"all {c}"], "label": c}
            for i, c in enumerate(GOLDS)]
    write_tsv(tmp_path / "pairs.jsonl", rows)
    r = run_task(read_task(tmp_path / "pairs.jsonl", "retrieval"), Similarity(ColourEmbedder()), tmp_path / "r",
                 progress=False)
    assert r["retrieval"]["image->text"]["R@1"] == 100.0 and r["retrieval"]["text->image"]["R@1"] == 100.0
    assert r["chance"]["image->text"]["R@1"] == pytest.approx(100 * 2 / 12, abs=0.01)  # 2 of 12 captions relevant
    assert r["chance"]["text->image"]["R@1"] == pytest.approx(100 / 6, abs=0.01)
    c = run_task(read_task(tmp_path / "pairs.jsonl", "classification"), Similarity(ColourEmbedder()), tmp_path / "c",
                 progress=False)
    assert c["accuracy"] == 100.0 and c["n"] == 6


def test_items_the_model_cannot_read_are_counted_not_scored(tmp_path):
    import numpy as np

    np.save(tmp_path / "trace.npy", np.zeros((4, 2), dtype=np.float32))
    (tmp_path / "t.ts.npy").write_bytes((tmp_path / "trace.npy").read_bytes())
    rows = colour_rows(GOLDS[:2])
    rows.append({**colour_rows(["red"])[0], "index": 9, "image": "", "timeseries_path": "t.ts.npy"})
    task = read_task(write_tsv(tmp_path / "mixed.tsv", rows))
    r = run_task(task, Similarity(ColourEmbedder()), tmp_path / "u", progress=False)
    assert r["n"] == 2 and r["skipped"]["unsupported"] == 1
    assert r["skipped"]["unsupported_reason"] == "the model reads image, text, not timeseries"


def test_generation_asks_the_chat_model_with_the_mmbench_prompt(tmp_path, one_thread):
    chat = ChatModel(tiny_vlm(max_positions=256), "tiny")
    task = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(GOLDS[:3])))
    r = run_task(task, Generate(chat), tmp_path / "g", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "g" / "predictions.jsonl").read_text().splitlines()]
    text = prompt("mcq", task.items[0], task.items[0].options, {})
    assert text.endswith("D. yellow\nAnswer with the option's letter from the given choices directly.")
    for rec, item in zip(recs, task.items):  # batched generation answers as the chat door does, one by one
        alone = chat.chat(messages(prompt("mcq", item, item.options, {}), item_media(item)), max_tokens=16,
                          temperature=0.0).text
        assert rec["raw"] == alone
    assert r["unparsed"] == sum(x["parsed"] is None for x in recs)
    assert r["accuracy"] == pytest.approx(100 * sum(x["correct"] for x in recs) / 3, abs=0.01)


@torch.no_grad()
def test_likelihood_is_the_models_own_log_probability(tmp_path, one_thread):
    vlm = tiny_vlm(max_positions=256)
    task = read_task(write_tsv(tmp_path / "m.tsv", colour_rows(GOLDS[:2])))
    scorer = Likelihood(ChatModel(vlm, "tiny"))
    unit = units(task.items)[0]
    scores = scorer.option_scores(unit)
    item = unit.item
    for key, text in unit.options.items():  # sum of log-probs = -(mean cross-entropy x labelled tokens)
        conv = [{"role": "user", "content": f"<image>\n{item.question}"}, {"role": "assistant", "content": text}]
        enc = vlm.tokenizer.encode_batch([conv])
        batch = {"ids": torch.tensor([enc[0].ids]), "padding": torch.ones(1, len(enc[0].ids), dtype=torch.bool),
                 "labels": torch.tensor([enc[0].labels]), "media": vlm.media_inputs(enc, [item_media(item)])}
        loss, logs = vlm.loss(batch)
        assert scores[key] == pytest.approx(-float(loss) * logs["tokens"], rel=1e-4, abs=1e-4)
    turned = units(task.items, circular=True)[1]  # the options' order does not change their scores
    assert sorted(scorer.option_scores(turned).values()) == pytest.approx(sorted(scores.values()))
    r = run_task(task, scorer, tmp_path / "l", progress=False)
    best = max(scores, key=scores.get)
    assert r["by_category"]["warm"]["accuracy"] == 100.0 * (best == unit.answer)


def test_world_bench_is_deterministic_and_agrees_with_the_scene_graph(tmp_path):
    config = WorldBenchConfig(scale=0.05, prior_scenes=40, tasks=("image-mcq", "image-yesno", "table-mcq"))
    a, b = build(tmp_path / "a", config, progress=False), build(tmp_path / "b", config, progress=False)
    assert json.loads(a.read_text())["files"] == json.loads(b.read_text())["files"]
    name, tasks = resolve(str(a))
    assert name == "world-bench" and [t.name for t in tasks] == ["image-mcq", "image-yesno", "table-mcq"]
    mcq = tasks[0]
    assert mcq.priors.endswith("image-mcq.priors.jsonl")
    scene = generate_scene(config.seed, config.split, 0)  # the first rows ask about test scene 0
    rows = image_mcq(scene, _rng(config.seed, config.split, 0, "image-mcq"))
    for row, item in zip(rows, mcq.items):
        assert (item.question, item.options[item.answer], item.category) == (row["question"], row["answer"],
                                                                              row["category"])
        said = item.options[item.answer]
        if item.category == "count":  # checked against the scene graph, independently of the builder
            assert said == str(sum(o.shape == item.question.split()[2][:-1] for o in scene.objects))
        if item.category == "shape":
            assert said == scene.by_color(item.question.split()[4]).shape
        if item.category == "size":
            assert said == next(o.size for o in scene.objects if o.name in item.question)
    assert {"count", "shape", "size"} <= {r["category"] for r in rows}
    yesno = tasks[1]
    assert {it.answer for it in yesno.items} == {"yes", "no"}
    assert all(sum(1 for x in yesno.items if x.group == it.group) == 2 for it in yesno.items)
    assert not tasks[2].items[0].media and "| object | shape |" in tasks[2].items[0].hint
