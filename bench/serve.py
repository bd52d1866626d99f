"""The search index and `sensorium serve` against the issue's goals (2-core CPU): search p50 < 5 ms at 1M items with
a filter, >= 500 QPS at 32 clients, ANN recall@10 >= 0.95, end-to-end text query over HTTP p50 < 30 ms.

Indexes of N items = real items embedded by the model (the clipart test split when present, else generated pictures
and captions) plus synthetic vectors drawn around them (2,000 centres, a shared 128-d anisotropic subspace with a
decaying spectrum, isotropic noise; each with a modality of image/text/audio and one of 20 categories). Measures:
build time (resumable in chunks: a 1M HNSW graph takes longer than one run here, rerun to continue), memory,
exact vs ANN recall@10, p50/p99 of search in process, and p50/p99/QPS over HTTP on loopback at 1, 8, 32 clients for
search alone (a vector query) and end to end (a text query embedded by the server), with and without a filter.

    nice -n 10 python bench/serve.py --size 100000 --size 1000000 --budget 540
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import save

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"filtered_p50_ms_1M": 5.0, "qps_32_clients": 500.0, "recall_at_10": 0.95, "e2e_text_p50_ms": 30.0}
CAPTIONS = ["a red apple", "a blue car", "a green tree", "a yellow sun", "a black cat", "a white house", "an orange fish",
            "a purple flower", "a brown dog", "a grey cloud", "a pink bird", "a small boat", "a tall tower", "a round clock",
            "a happy face", "a musical note", "a rocket", "a cup of coffee", "a pair of glasses", "a bicycle"]
# a third of the items, then 1 category in 20: ~1.7% of them (the HTTP runs use this one)
FILTER = {"modality": "image", "where": {"category": "c3"}}
FILTERS = {"unfiltered": {}, "modality": {"modality": "image"}, "filtered": FILTER}


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tiny_model(work: Path, dim: int = 512) -> Path:
    """A composer-shaped model (linear heads over the packaged MiniLM / EfficientNet towers) at the packaged dim."""
    from sensorium.models.aligned import AlignedConfig, AlignedModel, HeadConfig

    root = work / "model"
    if not (root / "model" / "config.json").exists():
        import torch

        torch.manual_seed(0)
        heads = {"image": HeadConfig(1280, 0), "text": HeadConfig(384, 0)}
        AlignedModel(AlignedConfig(dim=dim, heads=heads, towers={"image": "efficientnet-lite0", "text": "minilm-l6"})
                     ).save(root / "model")
    return root


def real_source(work: Path) -> list[Path]:
    """The clipart test split when the quick start built it, else 200 generated pictures with captions."""
    clipart = ROOT / "data" / "clipart" / "test"
    if clipart.is_dir() and any(clipart.glob("*.tar")):
        return [clipart]
    folder = work / "real"
    if not folder.is_dir():
        from PIL import Image, ImageDraw

        rng = np.random.default_rng(0)
        folder.mkdir(parents=True)
        for i in range(200):
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            img = Image.new("RGB", (96, 96), "white")
            box = [int(v) for v in sorted(rng.integers(5, 90, 2))] * 2
            (ImageDraw.Draw(img).ellipse if i % 2 else ImageDraw.Draw(img).rectangle)(box, fill=colour)
            img.save(folder / f"item{i:03d}.png")
            (folder / f"item{i:03d}.txt").write_text(f"{CAPTIONS[i % len(CAPTIONS)]}, picture {i}")
    return [folder]


def synthetic(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n unit vectors around the real ones (the generator the faiss/usearch measurement used, centred on real items)."""
    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    base = np.random.default_rng(0)
    centres = real[base.integers(0, len(real), 2000)] + 0.6 * base.standard_normal((2000, dim)).astype(np.float32) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = base.standard_normal((128, dim)).astype(np.float32) / np.sqrt(dim)
    spectrum = 1.0 / np.sqrt(np.arange(1, 129, dtype=np.float32))
    spectrum /= np.linalg.norm(spectrum)
    scale = base.uniform(0.6, 1.1, 2000).astype(np.float32)
    k = rng.integers(0, 2000, n)
    z = rng.standard_normal((n, 128)).astype(np.float32) * spectrum
    x = centres[k] + scale[k, None] * (z @ basis) + 0.45 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(model: Path, root: Path, size: int, budget: float, chunk: int = 100_000) -> dict[str, Any]:
    """Create (or resume) the index of `size` items; each chunk is committed with its graph extension."""
    from sensorium.index import Index, build

    progress_file = root.parent / f"{root.name}.build.json"
    log = json.loads(progress_file.read_text()) if progress_file.exists() and (root / "items.sqlite").exists() else None
    start = time.perf_counter()
    if log is None:
        t = time.perf_counter()
        index, report = build(model, root, real_source(root.parent), overwrite=True, progress=False)
        log = {"real_items": index.count, "embed_real_s": round(time.perf_counter() - t, 1), "chunks": []}
        progress_file.write_text(json.dumps(log))
    index = Index.open(root, readonly=False)
    real = index.vectors.gather(np.arange(log["real_items"]))
    modalities = np.array(["image", "text", "audio"])
    while index.count < size:
        if time.perf_counter() - start > budget:
            return {"complete": False, **log}
        n = min(chunk, size - index.count)
        at = index.count
        vectors = synthetic(real, n, seed=at)
        items = [{"modality": str(modalities[i % 3]), "locator": f"synthetic:{at + i}",
                  "meta": {"category": f"c{(i * 7 + at) % 20}"}} for i in range(n)]
        t = time.perf_counter()
        index.add_vectors(vectors, items)
        t_add = time.perf_counter() - t
        index.update_graph(progress=False, force=index.count >= int(index.state["ann_threshold"]))
        log["chunks"].append({"rows": [at, index.count], "add_s": round(t_add, 1),
                              "graph_s": round(time.perf_counter() - t - t_add, 1), "load1": os.getloadavg()[0]})
        progress_file.write_text(json.dumps(log))
        print(f"  {index.count}/{size} items, chunk {time.perf_counter() - t:.0f}s", flush=True)
    log["build_s"] = round(log["embed_real_s"] + sum(c["add_s"] + c["graph_s"] for c in log["chunks"]), 1)
    return {"complete": True, **log}


def exact_top10(index: Any, queries: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Ground-truth rows by brute force over every vector (memory-mapped, in chunks)."""
    best_s = np.full((len(queries), 10), -np.inf, np.float32)
    best_r = np.zeros((len(queries), 10), np.int64)
    for start, block in index.vectors.iter_range(0, index.vectors.nrows, 131072):
        s = queries @ block.T
        if mask is not None:
            s[:, ~mask[start:start + len(block)]] = -np.inf
        s = np.concatenate([best_s, s], 1)
        r = np.concatenate([best_r, np.broadcast_to(np.arange(start, start + len(block)), (len(queries), len(block)))], 1)
        top = np.argpartition(-s, 9, axis=1)[:, :10]
        best_s, best_r = np.take_along_axis(s, top, 1), np.take_along_axis(r, top, 1)
    return best_r


def latency(fn: Callable[[Any], Any], inputs: list, warm: int = 10) -> dict[str, float]:
    for x in inputs[:warm]:
        fn(x)
    times = []
    for x in inputs:
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}


def load_test(fn: Callable[[Any], Any], inputs: list, clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads calling fn in a loop for `seconds`: QPS and per-call p50/p99."""
    lats: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds
    errors = [0]

    def work(i: int) -> None:
        j = i * 31
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                fn(inputs[j % len(inputs)])
            except Exception:  # counted: a failing request must not look fast
                errors[0] += 1
            lats[i].append((time.perf_counter() - t) * 1e3)
            j += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    flat = [x for row in lats for x in row]
    return {"clients": clients, "qps": round(len(flat) / elapsed, 1), "p50_ms": round(float(np.percentile(flat, 50)), 3),
            "p99_ms": round(float(np.percentile(flat, 99)), 3), "requests": len(flat), "errors": errors[0]}


def measure(root: Path, seconds: float, n_queries: int = 200) -> dict[str, Any]:
    """Recall, in-process latency and QPS, then HTTP against `sensorium serve`."""
    import http.client

    import torch

    from sensorium.index import Index, allowed, search, search_vectors, set_search_threads

    set_search_threads(1)
    torch.set_num_threads(1)
    rss0 = rss_mb()
    t = time.perf_counter()
    index = Index.open(root)
    out: dict[str, Any] = {"open_s": round(time.perf_counter() - t, 2), "items": index.count,
                           "search": index.info()["search"], "index_bytes": index.info()["bytes"],
                           "rss_after_open_mb": round(rss_mb() - rss0, 1)}
    rng = np.random.default_rng(7)
    real = index.vectors.gather(np.arange(min(index.vectors.nrows, 2000)))
    queries = synthetic(real, n_queries, seed=10**9)
    queries = queries + 0.25 * rng.standard_normal(queries.shape).astype(np.float32) / np.sqrt(queries.shape[1])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for name, flt in FILTERS.items():
        mask = allowed(index, flt.get("modality"), flt.get("where"))
        truth = exact_top10(index, queries, None if mask.everything else mask.mask)
        hits = [search_vectors(index, q[None], 10, **flt)[0] for q in queries]
        recall = np.mean([len({h.record.row for h in row} & set(t.tolist())) / 10 for row, t in zip(hits, truth)])
        out[name] = {"allowed_items": mask.count, "recall_at_10": round(float(recall), 4),
                     **latency(lambda q, f=flt: search_vectors(index, q[None], 10, **f), list(queries))}
        if name == "unfiltered" and out["search"] == "hnsw":  # the recall / latency trade-off of the beam width
            out["ef_sweep"] = []
            for ef in (64, 128, 192, 256):
                got = [search_vectors(index, q[None], 10, ef=ef)[0] for q in queries]
                rec = np.mean([len({h.record.row for h in row} & set(t.tolist())) / 10 for row, t in zip(got, truth)])
                out["ef_sweep"].append({"ef": ef, "recall_at_10": round(float(rec), 4),
                                        **latency(lambda q, e=ef: search_vectors(index, q[None], 10, ef=e), list(queries))})
        out[name]["threads"] = [load_test(lambda q, f=flt: search_vectors(index, q[None], 10, **f), list(queries), c,
                                          seconds) for c in (1, 8, 32)]
    texts = [f"{CAPTIONS[i % len(CAPTIONS)]} {i}" for i in range(200)]
    out["embed_text_in_process"] = latency(lambda s: index.model.embed("text", [s]), texts[:50])
    out["search_text_in_process"] = latency(lambda s: search(index, s, 10), texts[:50])
    out["rss_after_search_mb"] = round(rss_mb() - rss0, 1)
    index = None  # free the in-process copy before the server loads its own

    port = 8000 + os.getpid() % 1000
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server_log = open(root.parent / "server.log", "w+")
    server = subprocess.Popen([sys.executable, "-m", "sensorium", "-q", "serve", str(root), "--port", str(port)],
                              env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        t = time.perf_counter()
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.3)
            if server.poll() is not None or time.perf_counter() - t > 300:
                server_log.seek(0)
                raise RuntimeError(f"server did not start: {server_log.read()[-2000:]}")
        served: dict[str, Any] = {"startup_s": round(time.perf_counter() - t, 1), "server_rss_mb": round(rss_mb(server.pid), 1)}
        local = threading.local()
        headers = {"Content-Type": "application/json"}

        def post(body: bytes) -> None:
            """One request on this thread's keep-alive connection (http.client: the lightest client, so the
            load generator takes as little as possible of the cores it shares with the server)."""
            for attempt in (0, 1):  # an idle keep-alive connection is closed by the server after 5 s: reconnect
                if not hasattr(local, "c") or attempt:
                    local.c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                try:
                    local.c.request("POST", "/v1/search", body, headers)
                    response = local.c.getresponse()
                    data = response.read()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    if attempt:
                        raise
            if response.status != 200:
                raise RuntimeError(data[:300])

        vec_bodies = [{"query": {"embedding": q.tolist()}, "k": 10} for q in queries]
        text_bodies = [{"query": s, "k": 10} for s in texts]
        for kind, bodies in (("search_vector", vec_bodies), ("end_to_end_text", text_bodies)):
            for name, flt in (("unfiltered", {}), ("filtered", FILTER)):
                use = [json.dumps(dict(b, **flt)).encode() for b in bodies]
                served[f"{kind}_{name}"] = {"single": latency(post, use[:100]),
                                            "clients": [load_test(post, use, c, seconds) for c in (1, 8, 32)]}
        served["server_rss_after_mb"] = round(rss_mb(server.pid), 1)
        out["http"] = served
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", help="index sizes (default 100000 and 1000000)")
    parser.add_argument("--work", default="/tmp/sensorium-bench-serve", help="where models and indexes are kept")
    parser.add_argument("--budget", type=float, default=540, help="seconds of building per run (then resume)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each load test")
    parser.add_argument("--name", default="serve_cpu", help="bench/results/NAME.json")
    parser.add_argument("--chunk", type=int, default=100_000, help="items added (and graph extended) per commit")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = tiny_model(work)
    results: dict[str, Any] = {"goals": GOALS, "filter": FILTER, "sizes": {}}
    previous = ROOT / "bench" / "results" / f"{args.name}.json"
    if previous.exists():
        results["sizes"] = json.loads(previous.read_text()).get("sizes", {})
    budget_end = time.perf_counter() + args.budget
    for size in args.size or [100_000, 1_000_000]:
        print(f"index of {size} items", flush=True)
        built = build_index(model, work / f"index-{size}", size, max(0.0, budget_end - time.perf_counter()),
                            args.chunk)
        entry: dict[str, Any] = {"build": built}
        if built["complete"]:
            entry.update(measure(work / f"index-{size}", args.seconds))
        results["sizes"][str(size)] = entry
    results["summary"] = summary(results["sizes"])
    print(json.dumps(results["summary"], indent=1))
    print("wrote", save(args.name, results))


def summarize(name: str = "serve_cpu") -> None:
    """Recompute the summary of an existing results file (after changing what the summary reports)."""
    path = ROOT / "bench" / "results" / f"{name}.json"
    data = json.loads(path.read_text())
    data["summary"] = summary(data["sizes"])
    path.write_text(json.dumps(data, indent=1) + "\n")


def summary(sizes: dict[str, Any]) -> dict[str, Any]:
    """Each goal with the measured number and whether it is met (None where not measured yet)."""
    out: dict[str, Any] = {}
    if "1000000" not in sizes:
        out["1000000"] = {"status": "not measured yet: run bench/serve.py --size 1000000 until it completes (the build "
                                    "resumes in 100k-item commits; about 1,100 CPU-seconds of HNSW construction)"}
    for size, entry in sizes.items():
        if "http" not in entry:
            out[size] = {"status": "index incomplete: rerun bench/serve.py to resume the build",
                         "built_items": entry["build"].get("chunks", [{}])[-1:] }
            continue
        http = entry["http"]
        qps32 = max(c["qps"] for c in http["search_vector_unfiltered"]["clients"] if c["clients"] == 32)
        qps32_filtered = max(c["qps"] for c in http["search_vector_filtered"]["clients"] if c["clients"] == 32)
        out[size] = {
            "search_p50_ms": entry["unfiltered"]["p50_ms"], "filtered_search_p50_ms": entry["filtered"]["p50_ms"],
            "modality_filter_p50_ms": entry["modality"]["p50_ms"],
            "modality_filter_recall_at_10": entry["modality"]["recall_at_10"],
            "recall_at_10": entry["unfiltered"]["recall_at_10"], "filtered_recall_at_10": entry["filtered"]["recall_at_10"],
            "http_search_qps_32_clients": qps32, "http_filtered_search_qps_32_clients": qps32_filtered,
            "in_process_qps_32_threads": entry["unfiltered"]["threads"][-1]["qps"],
            "http_e2e_text_p50_ms": http["end_to_end_text_unfiltered"]["single"]["p50_ms"],
            "build_s": entry["build"].get("build_s"), "server_rss_mb": http["server_rss_after_mb"]}
        m = out[size]
        m["goals_met"] = {"filtered_p50_under_5ms": m["filtered_search_p50_ms"] < GOALS["filtered_p50_ms_1M"],
                          "qps_32_clients_at_least_500": qps32 >= GOALS["qps_32_clients"],
                          "filtered_qps_32_clients_at_least_500": qps32_filtered >= GOALS["qps_32_clients"],
                          "recall_at_10_at_least_0.95": m["recall_at_10"] >= GOALS["recall_at_10"],
                          "e2e_text_p50_under_30ms": m["http_e2e_text_p50_ms"] < GOALS["e2e_text_p50_ms"]}
    return out


if __name__ == "__main__":
    main()
