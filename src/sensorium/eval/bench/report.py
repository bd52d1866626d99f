"""Results as Markdown: one task (headline, per category, per l2-category, MME scores, unparsed answers shown),
a suite (one line per task) and a leaderboard (models side by side, per task and per category)."""

from __future__ import annotations

from typing import Any, Sequence


def headline(result: dict[str, Any]) -> str:
    """The task's main number as text: accuracy %, CIDEr-D, or R@1; 'n/a' with the reason when it did not run."""
    if result.get("not_applicable"):
        return "n/a"
    if result["kind"] == "caption":
        return f"CIDEr-D {result['cider_d']:.3f}"
    if result["kind"] == "retrieval":
        return f"R@1 {result['accuracy']:.1f}"
    return f"{result['accuracy']:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def task_markdown(result: dict[str, Any], records: Sequence[dict[str, Any]] = ()) -> str:
    """A task's results page."""
    lines = [f"# {result['task']} ({result['kind']})", "",
             f"model `{result['model']}`, scoring `{result['scoring']}`" + (", CircularEval" if result.get("circular")
                                                                             else ""),
             f"source `{result['source']}`", ""]
    if result.get("not_applicable"):
        return "\n".join(lines + [f"not applicable: {result['not_applicable']}", ""])
    lines.append(f"**{headline(result)}** over {result['n']} items" + (
        f" (first rotation alone: {result['vanilla_accuracy']:.1f})" if result.get("circular") else ""))
    if "unparsed" in result:
        lines.append(f"unparsed answers (counted wrong): {result['unparsed']}")
    if result.get("errors"):
        lines.append(f"questions the model refused (counted wrong): {result['errors']}")
    lines.append("")
    for key, title in (("by_category", "category"), ("by_l2_category", "l2-category")):
        if result.get(key):
            lines += _table([title, "n", "accuracy"], [[k, v["n"], f"{v['accuracy']:.1f}"]
                                                        for k, v in result[key].items()]) + [""]
    if result.get("mme"):
        lines += _table(["category", "pictures", "acc", "acc+", "score"],
                        [[k, v["pictures"], f"{v['acc']:.1f}", f"{v['acc_plus']:.1f}", f"{v['score']:.1f}"]
                         for k, v in result["mme"].items()])
        lines += ["", f"perception {result['perception']:.1f}, cognition {result['cognition']:.1f}", ""]
    if result.get("retrieval"):
        lines += _table(["direction", "R@1", "R@5", "R@10", "median rank", "chance R@1", "chance R@10"],
                        [[d, m["R@1"], m["R@5"], m["R@10"], m["median_rank"], result["chance"][d]["R@1"],
                          result["chance"][d]["R@10"]] for d, m in result["retrieval"].items()]) + [""]
    if result["kind"] == "caption":
        lines += [f"BLEU-4 {result['bleu4']}, CIDEr-D {result['cider_d']}, mean words {result.get('mean_words')}", ""]
    bad = [r for r in records if r.get("parsed") is None and "raw" in r and "reason" in r][:5]
    if bad:
        lines += ["Unparsed answers (first 5):", ""] + [f"- {r['id']}: {r['raw']!r} ({r['reason']})" for r in bad] + [""]
    refused = [r for r in records if "error" in r][:3]
    if refused:
        lines += ["Refused questions (first 3):", ""] + [f"- {r['id']}: {r['error']}" for r in refused] + [""]
    skipped = result.get("skipped", {})
    if skipped.get("read") or skipped.get("unsupported"):
        lines.append(f"skipped: {skipped.get('read', 0)} unreadable rows, {skipped.get('unsupported', 0)} items the "
                     f"model cannot read" + (f" ({skipped['unsupported_reason']})" if skipped.get("unsupported_reason")
                                             else ""))
        lines += [f"- row {s['row']} (index {s['index']}): {s['reason']}" for s in skipped.get("read_examples", [])]
    return "\n".join(lines) + "\n"


def suite_markdown(name: str, model: str, results: dict[str, dict[str, Any]]) -> str:
    """A suite's results page: one line per task."""
    rows = [[t, r["kind"], r["scoring"], r.get("n", 0), headline(r), r.get("unparsed", ""),
             r.get("not_applicable", "")] for t, r in results.items()]
    return "\n".join([f"# {name}: {model}", ""] + _table(["task", "kind", "scoring", "n", "score", "unparsed", "note"],
                                                        rows)) + "\n"


def leaderboard_markdown(entries: Sequence[dict[str, Any]], tasks: Sequence[str]) -> str:
    """Models (each a suite result: {name, results: {task: result}}) side by side: the headline per task, then
    a per-category table for every task with categories."""
    lines = _table(["model", *tasks], [[e["name"], *(headline(e["results"][t]) if t in e["results"] else "-"
                                                     for t in tasks)] for e in entries]) + [""]
    for task in tasks:
        cats = list(dict.fromkeys(c for e in entries for c in e["results"].get(task, {}).get("by_category", {})))
        if len(cats) < 2:
            continue
        rows = []
        for e in entries:
            r = e["results"].get(task, {})
            if r.get("not_applicable") or not r:
                continue
            rows.append([e["name"], *(f"{r['by_category'][c]['accuracy']:.1f}" if c in r.get("by_category", {})
                                      else "-" for c in cats)])
        lines += [f"**{task}**", ""] + _table(["model", *cats], rows) + [""]
    return "\n".join(lines)
