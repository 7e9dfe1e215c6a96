"""Leaderboard load: the per-target leaderboard page under 16 concurrent clients, through
gunicorn on loopback, against PostgreSQL holding 500 models x 20 targets x 3 metrics.

Issue 5's figure: "With 500 models x 20 targets x 3 metrics of scores in PostgreSQL, the
leaderboard page answers at p95 under 150 ms with 16 concurrent clients." Prints p50/p95/p99
and requests/s of each gunicorn configuration tried, and the SQL queries of one request.

What is measured
- In the bench process, through Django's test client: the SQL of one leaderboard request,
  cold (empty cache) and warm, and where a request's time goes (the score-version query,
  the board computation, the rest: template rendering and middleware) for a 500-model target.
- Over HTTP, for each gunicorn configuration (DEBUG off, hashed static files, as in
  production): a warm-up (rounds over the mix's URLs until their latency settles: the cache
  is per process, so each worker computes each board once), then --duration seconds of --clients clients, each
  sending its next request as soon as the last answered (closed loop), 80% the default view
  of a random target and 20% a filtered or re-sorted view (source, modality, parameter range,
  name search, every layer, default layer, ascending; a share as htmx partials).

Baseline, in the same run on the same server: the same mix with the board cache defeated.
Each URL gets a unique ``max_params`` above every model's parameter count: the board is
the same one (checked below), but the cache key is new, so every request computes it (the
path a first visitor, or any visitor after a score changes, takes). Printed as a ratio.

    .venv/bin/python bench/leaderboard_load.py [--duration 20] [--clients 16]
        [--configs gthread:3x2:60,gthread:2x8:60,gthread:4x2:60,sync:3:60] [--tool auto|wrk|python]
        [--timeout 900] [--models 500] [--targets 20]

A configuration reads ``CLASS:WORKERS[xTHREADS]:CONN_MAX_AGE``; ``gthread:3x2:60`` is what
docker/compose.yml runs on 2 cores (gunicorn.conf.py: the CPU count plus one of gthread
workers with 2 threads each, persistent connections, a connection per request). The load
comes from wrk (``apt-get install wrk``; one Lua script picks each request's URL) when it is
installed, else from Python threads (http.client); on a 2-core machine the load generator,
gunicorn and PostgreSQL share the same cores, so the figures are conservative.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth); it creates and drops the database
likeness_bench_board. Everything (gunicorn, the database, temporary files) is removed on
exit, and the whole invocation is bounded by --timeout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _server import (  # bench/_server.py
    drop_database,
    free_port,
    pg_admin,
    start_gunicorn,
    start_watchdog,
    stop_gunicorn,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
DB = "likeness_bench_board"
TARGET_P95_MS = 150.0

METRICS = [
    {"name": "knn", "params": {"k": 5, "split": "loo"}},
    {"name": "linear_probe", "params": {"split": "holdout"}},
    {"name": "retrieval_map", "params": {}},
]
SOURCES = [
    ("timm", "image"),
    ("transformers-vision", "image"),
    ("open_clip-image", "image"),
    ("sentence-transformers", "text"),
    ("transformers-text", "text"),
    ("open_clip-text", "text"),
    ("transformers-audio", "audio"),
]
# Filtered views (20% of the mix): a query string, and whether it comes as an htmx partial.
VARIANTS = [
    ("source=timm", False),
    ("modality=text", False),
    ("min_params=100000000", False),
    ("q=vit", True),
    ("layers=all", False),
    ("layers=default", True),
    ("order=asc", False),
    ("sort=linear_probe(split=holdout)&order=desc", True),
    ("source=open_clip-image&min_params=50000000", False),
    ("sort=retrieval_map&order=asc&modality=image", True),
]


# --- Data -------------------------------------------------------------------------------------
def fill(n_models: int, n_targets: int) -> list[int]:
    """``n_targets`` labels targets (one per dataset, one run each) and ``n_models`` models,
    every model scored on every target with every metric (``n_models * n_targets * 3`` rows)
    on its default layer; every third model also on a second layer (the "best layer" choice),
    every seventh in bf16. Every fourth target's scores carry a ceiling."""
    from django.utils import timezone

    from evaluation.models import (
        Dataset,
        EmbeddingSet,
        PretrainedModel,
        Run,
        Score,
        Target,
        metric_key,
    )

    rng = random.Random(5)
    now = timezone.now()
    modalities = ["image", "text", "audio"]
    datasets = Dataset.objects.bulk_create(
        [
            Dataset(
                name=f"bench dataset {i:02d}",
                modality=modalities[i % 3],
                content_hash=f"{i:064d}",
                stimulus_count=1000 + 37 * i,
            )
            for i in range(n_targets)
        ]
    )
    targets = Target.objects.bulk_create(
        [Target(kind="labels", dataset=d, name=f"{d.name} labels") for d in datasets]
    )
    runs = Run.objects.bulk_create(
        [
            Run(dataset=d, metrics=METRICS, status="succeeded", started_at=now, finished_at=now)
            for d in datasets
        ]
    )
    Run.targets.through.objects.bulk_create(
        [Run.targets.through(run=r, target=t) for r, t in zip(runs, targets, strict=True)]
    )
    families = ["vit", "resnet", "convnext", "bert", "clip", "wav2vec", "minilm", "deit"]
    models = []
    for i in range(n_models):
        source, modality = SOURCES[i % len(SOURCES)]
        weights = "untrained" if i % 50 == 7 else "pretrained"
        if i % 100 == 3:
            source, weights = "baseline", "pretrained"
        models.append(
            PretrainedModel(
                name=f"{families[i % len(families)]}-{i:03d}",
                source=source,
                identifier=f"bench/{i}",
                weights=weights,
                modality=modality,
                default_layer="head",
                parameter_count=int(10 ** rng.uniform(5, 10)),  # 100k-10B, under the busters
                embedding_size=512,
            )
        )
    models = PretrainedModel.objects.bulk_create(models)
    metric_keys = [metric_key(m["name"], m["params"]) for m in METRICS]

    embedding_sets = []
    for m_index, model in enumerate(models):
        layers = ["head", "blocks.8"] if m_index % 3 == 0 else ["head"]
        for d_index, dataset in enumerate(datasets):
            for layer in layers:
                embedding_sets.append(
                    EmbeddingSet(
                        fingerprint=f"{model.pk}-{dataset.pk}-{layer}",
                        model=model,
                        dataset=dataset,
                        layer=layer,
                        pooling="model-default",
                        precision="bf16" if m_index % 7 == 0 else "fp32",
                        weights_id=model.identifier,
                        relative_path=f"{d_index}/{m_index}-{layer}.npy",
                        count=dataset.stimulus_count,
                        dim=512,
                        extraction_seconds=1.0,
                    )
                )
    embedding_sets = EmbeddingSet.objects.bulk_create(embedding_sets, batch_size=5000)
    by_key = {(e.model_id, e.dataset_id, e.layer): e for e in embedding_sets}

    scores = []
    for t_index, (target, run) in enumerate(zip(targets, runs, strict=True)):
        for m_index, model in enumerate(models):
            layers = ["head", "blocks.8"] if m_index % 3 == 0 else ["head"]
            for layer in layers:
                embedding_set = by_key[(model.pk, target.dataset_id, layer)]
                for key, entry in zip(metric_keys, METRICS, strict=True):
                    value = rng.uniform(0.05, 0.95)
                    half = rng.uniform(0.005, 0.05)
                    scores.append(
                        Score(
                            run=run,
                            model=model,
                            target=target,
                            layer=layer,
                            metric=entry["name"],
                            metric_key=key,
                            params=entry["params"],
                            value=value,
                            ci_low=value - half,
                            ci_high=value + half,
                            ceiling=rng.uniform(0.85, 0.98) if t_index % 4 == 0 else None,
                            n=embedding_set.count,
                            embedding_set=embedding_set,
                            details={"bootstrap": 1000},
                            created_at=now,
                        )
                    )
    Score.objects.bulk_create(scores, batch_size=2000)  # 2000 rows x ~20 fields < 65535
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return [t.pk for t in targets]


def fill_human(n_models: int) -> int:
    """A pair-ratings target of 1000 stimuli with ``n_models`` models scored on it, each
    score with its 1000 stimulus-bootstrap resamples stored (as a run stores them) and its
    provenance: the board shows paired marks, rank intervals and tie groups, computed from
    the stored resamples when the board is built, never by re-scoring."""
    import numpy as np
    from django.utils import timezone

    from evaluation.engine.metrics.results import stimulus_resampling
    from evaluation.metrics import METRICS as REGISTRY
    from evaluation.models import (
        Dataset,
        HumanJudgments,
        PretrainedModel,
        Run,
        Score,
        Target,
        resamples_to_bytes,
    )

    rng = np.random.default_rng(7)
    now = timezone.now()
    dataset = Dataset.objects.create(
        name="bench human ratings", modality="image", content_hash="h" * 64, stimulus_count=1000
    )
    judgments = HumanJudgments.objects.create(
        dataset=dataset, name="similarity", kind="pairs", judgment_count=499_500,
        participant_count=40, reliability={"mean": 0.82, "method": "split-half, Spearman-Brown"},
    )  # fmt: skip
    target = Target.objects.create(
        kind="pairs", dataset=dataset, judgments=judgments, name="bench human ratings v1"
    )
    entry = {"name": "pair_alignment", "params": {"correlation": "spearman"}}
    run = Run.objects.create(dataset=dataset, metrics=[entry], status="succeeded")
    run.targets.set([target])
    shared = rng.normal(scale=0.02, size=1000)  # sampling error the models share
    for k in range(n_models):
        model = PretrainedModel.objects.create(
            name=f"human-bench-{k:02d}", source="timm", identifier=f"bench/human/{k}",
            modality="image", default_layer="head", parameter_count=10**7,
        )  # fmt: skip
        value = 0.6 - 0.01 * k
        resamples = value + shared + rng.normal(scale=0.01, size=1000)
        Score.objects.create(
            run=run, model=model, target=target, layer="head", metric="pair_alignment",
            metric_key="pair_alignment(correlation=spearman)", params=entry["params"],
            value=value, ci_low=float(np.quantile(resamples, 0.025)),
            ci_high=float(np.quantile(resamples, 0.975)), ceiling=0.82, n=1000,
            resamples=resamples_to_bytes(resamples),
            resampling=stimulus_resampling(1000, 1000, 0),
            provenance={
                "code_version": REGISTRY["pair_alignment"].version,
                "dataset_hash": dataset.content_hash,
                "model_revision": model.revision_key,
            },
            created_at=now,
        )  # fmt: skip
    return target.pk


# --- In-process measurements ------------------------------------------------------------------
def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def in_process(target_ids: list[int]) -> dict[str, float]:
    """SQL of one request (cold and warm cache) and where a request's time goes, on the
    first target given."""
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from evaluation import leaderboards as boards
    from evaluation.models import Target

    client = Client(HTTP_HOST="127.0.0.1")
    target = Target.objects.select_related("dataset").get(pk=target_ids[0])
    url = f"/leaderboards/{target.pk}/"
    client.get(url)  # import and template-loading costs out of the way
    cache.clear()
    for label in ("cold", "warm"):
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200, response.status_code
        total = sum(float(q["time"]) for q in ctx.captured_queries) * 1000
        print(
            f"SQL of one request, {label} cache: {len(ctx)} queries, {total:.1f} ms in the database"
        )
        for q in ctx.captured_queries:
            sql = re.sub(r"\s+", " ", q["sql"])
            print(
                f"  {float(q['time']) * 1000:6.1f} ms  {sql[:150]}{'...' if len(sql) > 150 else ''}"
            )
    board = boards.leaderboard(target=target, query=boards.BoardQuery())
    print(
        f"the board: {len(board.rows)} rows (best layer) of {board.total_models} models, "
        f"{len(board.metric_keys)} metrics; page {len(response.content) / 1024:.0f} KiB"
    )

    # Cache-busting leaves the board unchanged: the same rows for every variant.
    for params, _ in [("", False), *VARIANTS]:
        plain = boards.BoardQuery.from_params(_params(params))
        busted = boards.BoardQuery.from_params(_params(params + "&max_params=9001000000001"))
        assert plain.cache_key() != busted.cache_key()
        a = [(r.model_id, r.layer) for r in boards._compute(target, plain).rows]
        b = [(r.model_id, r.layer) for r in boards._compute(target, busted).rows]
        assert a == b, f"cache-busting changed the board of {params!r}"
        assert a or params, "the default view of the board is empty"

    query = boards.BoardQuery()

    def cold_request() -> None:
        cache.clear()
        client.get(url)

    timings = {
        "cold request": median_ms(cold_request, 7),
        "warm request": median_ms(lambda: client.get(url), 15),
        "score-version query": median_ms(lambda: boards.scores_version(target), 15),
        "board computation": median_ms(lambda: boards._compute(target, query), 7),
    }
    key = boards.board_key(target=target, query=query)
    assert cache.get(key) is not None
    timings["cache get (unpickle)"] = median_ms(lambda: cache.get(key), 15)
    htmx = Client(HTTP_HOST="127.0.0.1", HTTP_HX_REQUEST="true")
    htmx.get(url)
    timings["warm htmx partial"] = median_ms(lambda: htmx.get(url), 15)
    timings["warm CSV"] = median_ms(lambda: client.get(url + "?format=csv"), 15)
    print(f"server time in process, median, target of {board.total_models} models:")
    for name, ms in timings.items():
        print(f"  {name:22s} {ms:7.1f} ms")
    other = (
        timings["warm request"] - timings["score-version query"] - timings["cache get (unpickle)"]
    )
    print(f"  {'rendering and the rest':22s} {other:7.1f} ms  (warm request - version - cache get)")
    return timings


def _human_page(target_id: int) -> str:
    from django.test import Client

    return Client(HTTP_HOST="127.0.0.1").get(f"/leaderboards/{target_id}/").content.decode()


def _params(query_string: str) -> dict[str, str]:
    from django.http import QueryDict

    return QueryDict(query_string)


# --- Server -----------------------------------------------------------------------------------
@dataclass
class Config:
    worker_class: str
    workers: int
    threads: int
    conn_max_age: int

    @classmethod
    def parse(cls, raw: str) -> Config:
        kind, size, age = [*raw.split(":"), "60"][:3]
        workers, _, threads = size.partition("x")
        return cls(kind, int(workers), int(threads or 1), int(age))

    def __str__(self) -> str:
        threads = f" x {self.threads} threads" if self.worker_class == "gthread" else ""
        return (
            f"{self.worker_class} {self.workers} workers{threads}, CONN_MAX_AGE={self.conn_max_age}"
        )


class CpuMeter:
    """CPU seconds over a phase, from /proc (Linux): gunicorn's processes (its own process
    group), PostgreSQL's (live backends plus, through the postmaster's children's time, those
    that exited), the load tool (wrk: a child waited for; Python: this process), and the rest
    of the machine (other processes: on a shared machine they show here)."""

    def __init__(self, server_pgid: int) -> None:
        self.pgid = server_pgid
        self.tick = os.sysconf("SC_CLK_TCK")

    def _snapshot(self) -> dict[str, float]:
        out = {"gunicorn": 0.0, "postgres": 0.0}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            rest = raw[raw.rindex(")") + 2 :].split()
            ppid, pgrp = int(rest[1]), int(rest[2])
            own, children = int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])
            if pgrp == self.pgid:
                out["gunicorn"] += own + children
            elif comm == "postgres":
                out["postgres"] += own + (children if ppid == 1 else 0)
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
        out["busy"] = sum(values) - values[3] - values[4]
        out["all"] = sum(values)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        out["tool"] = (usage.ru_utime + usage.ru_stime + me.ru_utime + me.ru_stime) * self.tick
        return out

    def start(self) -> None:
        self.before = self._snapshot()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        d = {k: (after[k] - self.before[k]) / self.tick for k in after}
        d["other"] = d["busy"] - d["gunicorn"] - d["postgres"] - d["tool"]
        d["share"] = d["busy"] / d["all"] if d["all"] else float("nan")
        return d


# --- Load -------------------------------------------------------------------------------------
def request_mix(target_ids: list[int]) -> list[tuple[str, bool]]:
    """100 (path, htmx) entries; a client picks one at random for each request: 80 are the
    default view of one of the targets, 20 a filtered view (each variant on two targets)."""
    rng = random.Random(1)
    mix = [(f"/leaderboards/{target_ids[i % len(target_ids)]}/", False) for i in range(80)]
    for params, htmx in VARIANTS:
        for target_id in rng.sample(target_ids, 2):
            mix.append((f"/leaderboards/{target_id}/?{params}", htmx))
    return mix


@dataclass
class Result:
    requests: int
    seconds: float
    p50: float
    p95: float
    p99: float
    max: float
    errors: int
    cpu: dict[str, float] | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


WRK_SCRIPT = r"""
local paths, htmx = {}, {}
local bust = os.getenv("BENCH_BUST") == "1"
local threads, counter = {}, 0
id = 0  -- a global: setup() sets it in each thread

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_MIX")) do
    local flag, path = line:match("^(%d) (.*)$")
    table.insert(paths, path)
    table.insert(htmx, flag == "1")
  end
  math.randomseed(os.time() + id * 7919)
end

function request()
  local i = math.random(#paths)
  local path = paths[i]
  if bust then
    counter = counter + 1
    local sep = path:find("?", 1, true) and "&" or "?"
    path = path .. sep .. "max_params=9" .. string.format("%03d%09d", id, counter)
  end
  local headers = {Host = "127.0.0.1"}
  if htmx[i] then headers["HX-Request"] = "true" end
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "us": %d, "p50": %d, "p95": %d, "p99": %d, "max": %d, ' ..
    '"errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def load_wrk(port: int, mix_file: Path, script: Path, clients: int, seconds: float, bust: bool):
    env = {**os.environ, "BENCH_MIX": str(mix_file), "BENCH_BUST": "1" if bust else "0"}
    command = [
        "wrk", "-t", str(min(2, clients)), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    raw = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    return Result(
        raw["requests"], raw["us"] / 1e6,
        raw["p50"] / 1000, raw["p95"] / 1000, raw["p99"] / 1000, raw["max"] / 1000,
        raw["errors"],
    )  # fmt: skip


def load_python(port: int, mix: list[tuple[str, bool]], clients: int, seconds: float, bust: bool):
    """Threads with one keep-alive connection each; the same closed loop as wrk."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(index: int) -> None:
        rng = random.Random(index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        bad = 0
        counter = 0
        start.wait()
        while time.monotonic() < stop_at[0]:
            path, htmx = rng.choice(mix)
            if bust:
                counter += 1
                path += ("&" if "?" in path else "?") + f"max_params=9{index:03d}{counter:09d}"
            headers = {"Host": "127.0.0.1", **({"HX-Request": "true"} if htmx else {})}
            began = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    bad += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            mine.append(time.perf_counter() - began)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.monotonic()
    stop_at[0] = began + seconds
    start.wait()
    for t in threads:
        t.join(seconds + 30)
    wall = time.monotonic() - began
    ordered = sorted(latencies) or [float("nan")]

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] * 1000

    return Result(len(latencies), wall, pct(50), pct(95), pct(99), ordered[-1] * 1000, errors[0])


def warm_up(port: int, mix: list[tuple[str, bool]], clients: int, bound: float, config: Config):
    """Rounds of every distinct URL of the mix, ``clients`` at a time: at least two per worker
    (a round's requests fall on workers at random, and the cache is per process), then until
    a round's mean latency is no longer 20% below the round before (each worker has computed
    and rendered each board once), or ``bound`` seconds have passed. Each round
    waits for all its answers, so no abandoned request keeps the server busy afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    urls = sorted(set(mix))
    started = time.monotonic()
    means: list[float] = []

    def fetch(entry: tuple[str, bool]) -> float:
        path, htmx = entry
        began = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request(
                "GET",
                path,
                headers={"Host": "127.0.0.1", "HX-Request": "true"}
                if htmx
                else {"Host": "127.0.0.1"},
            )
            conn.getresponse().read()
        finally:
            conn.close()
        return time.perf_counter() - began

    with ThreadPoolExecutor(clients) as pool:
        while time.monotonic() - started < bound:
            random.shuffle(urls)
            means.append(statistics.mean(pool.map(fetch, urls)) * 1000)
            if len(means) >= 2 * config.workers and means[-1] > 0.8 * means[-2]:
                break
    print(
        f"{config}: warm-up {time.monotonic() - started:.0f} s, mean latency per round of "
        f"{len(urls)} URLs: " + ", ".join(f"{m:.0f}" for m in means) + " ms"
    )


# --- Main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=20, help="seconds of load per phase")
    parser.add_argument(
        "--warmup", type=float, default=90, help="at most this many seconds of warm-up"
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--configs",
        default="gthread:3x2:60,gthread:2x8:60,gthread:4x2:60,sync:3:60",
        help="CLASS:WORKERS[xTHREADS]:CONN_MAX_AGE, comma-separated",
    )
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument(
        "--human-models",
        type=int,
        default=20,
        help="models on one more target, of pair ratings, whose scores keep their resamples "
        "(issue 20: paired marks, rank intervals and tie groups); 0 leaves it out",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds, whole invocation")
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    args = parser.parse_args()
    configs = [Config.parse(raw) for raw in args.configs.split(",") if raw.strip()]
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"

    tmp = Path(tempfile.mkdtemp(prefix="likeness-bench-board-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "LIKENESS_VAR_DIR": str(tmp),
        "STATIC_ROOT": str(tmp / "static"),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}",
        "SECRET_KEY": "bench-only-" + "x" * 40,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATIC_MANIFEST": "1",
        "LOG_LEVEL": "WARNING",
        "CELERY_BROKER_URL": "memory://",
    }
    for name in ("MEDIA_ROOT", "EMBEDDINGS_ROOT", "TEST_DATABASE_NAME", "DB_CONN_MAX_AGE"):
        env.pop(name, None)
    os.environ.clear()
    os.environ.update(env)
    server: subprocess.Popen | None = None
    deadline = time.monotonic() + args.timeout

    def cleanup() -> None:
        stop_gunicorn(server)
        if not args.keep:
            drop_database(DB)
            shutil.rmtree(tmp, ignore_errors=True)

    watchdog = start_watchdog(args.timeout, cleanup)
    status = 0
    try:
        pg_admin(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        pg_admin(f"CREATE DATABASE {DB}")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        call_command("collectstatic", verbosity=0, interactive=False)
        started = time.perf_counter()
        target_ids = fill(args.models, args.targets)
        human = [fill_human(args.human_models)] if args.human_models else []
        from evaluation.models import Score

        print(
            f"filled {Score.objects.count():,} scores ({args.models} models x {args.targets} "
            f"targets x {len(METRICS)} metrics, a second layer on every third model) "
            f"in {time.perf_counter() - started:.0f} s"
        )
        timings = in_process(target_ids)
        if human:
            print(f"the pair-ratings target of {args.human_models} models with stored resamples:")
            human_timings = in_process(human)
            page = _human_page(human[0])
            assert "95% rank interval" in page and 'class="num tie-group"' in page, page[:500]
            print(
                "  its page shows the rank-interval and tie-group columns; cold request "
                f"{human_timings['cold request']:.0f} ms, of which the board with its paired "
                f"comparisons {human_timings['board computation']:.0f} ms"
            )
        connections.close_all()

        mix = request_mix(target_ids + human)
        mix_file = tmp / "mix.txt"
        mix_file.write_text("".join(f"{int(htmx)} {path}\n" for path, htmx in mix))
        script = tmp / "mix.lua"
        script.write_text(WRK_SCRIPT)

        def drive(port: int, seconds: float, bust: bool) -> Result:
            meter = CpuMeter(server.pid)
            meter.start()
            if tool == "wrk":
                result = load_wrk(port, mix_file, script, args.clients, seconds, bust)
            else:
                result = load_python(port, mix, args.clients, seconds, bust)
            result.cpu = meter.stop()
            return result

        print(
            f"load: {tool}, {args.clients} clients, {args.duration:.0f} s per phase; mix: 80% "
            f"default view of {len(target_ids + human)} targets, 20% {len(VARIANTS)} filtered views "
            f"(4 of them htmx partials)"
        )
        results: list[tuple[Config, Result, Result]] = []
        for config in configs:
            if deadline - time.monotonic() < 2 * args.duration + args.warmup + 40:
                print(f"{config}: skipped, the time bound is near")
                status = 1
                continue
            port = free_port()
            log = tmp / f"gunicorn-{port}.log"
            server = start_gunicorn(
                config.workers, config.worker_class, config.threads, port, log,
                {**env, "DB_CONN_MAX_AGE": str(config.conn_max_age)},
            )  # fmt: skip
            wait_ready(port, mix[0][0], server, deadline)
            warm_up(port, mix, args.clients, args.warmup, config)
            cached = drive(port, args.duration, bust=False)
            uncached = drive(port, args.duration, bust=True)
            stop_gunicorn(server)
            server = None
            results.append((config, cached, uncached))
            for label, r in (("cached  ", cached), ("uncached", uncached)):
                c, n = r.cpu or {}, max(1, r.requests)
                answered = (
                    f"p50 {r.p50:6.1f} ms  p95 {r.p95:6.1f} ms  p99 {r.p99:6.1f} ms  "
                    f"max {r.max:6.0f} ms"
                    if r.max > 0
                    else "no answer within the 10 s client timeout"
                )
                print(
                    f"{config}: {label} {answered}  {r.rate:6.1f} req/s  ({r.requests} "
                    f"requests, {r.errors} errors: non-200, over 10 s, or socket)"
                )
                print(
                    f"{'':{len(str(config)) + 11}}CPU per request: gunicorn "
                    f"{c['gunicorn'] * 1000 / n:.1f} ms, PostgreSQL {c['postgres'] * 1000 / n:.1f} "
                    f"ms; {tool} {c['tool']:.1f} s, other processes {c['other']:.1f} s; "
                    f"machine {c['share']:.0%} busy"
                )
            print(
                f"{config}: cache gives p95 {uncached.p95 / cached.p95:.1f}x lower, "
                f"{cached.rate / uncached.rate:.1f}x the requests/s (uncached / cached)"
            )
            text = log.read_text(errors="replace")
            raised = re.findall(r"^\S+(?:Error|Exception): .*$", text, re.M)
            if raised:
                print(f"{config}: the server raised {len(raised)} times, e.g. {raised[0][:160]}")
                status = 1
            killed = re.findall(r"^.*(?:WORKER TIMEOUT|SIGKILL|\[CRITICAL\]).*$", text, re.M)
            if killed:
                print(
                    f"{config}: gunicorn logged {len(killed)} worker kills, e.g. {killed[0][:160]}"
                )
        if results:
            best = min(results, key=lambda item: item[1].p95)
            config, cached, uncached = best
            ok = cached.p95 < TARGET_P95_MS and not cached.errors
            print(
                f"best: {config}: p95 {cached.p95:.1f} ms cached ({uncached.p95:.1f} ms uncached) "
                f"at {args.clients} clients; issue 5's target p95 < {TARGET_P95_MS:.0f} ms: "
                f"{'met' if ok else 'NOT met'}; one cold board costs "
                f"{timings['cold request']:.0f} ms of server time in process"
            )
            status |= 0 if ok else 1
    finally:
        watchdog.cancel()
        cleanup()
    sys.exit(status)


if __name__ == "__main__":
    main()
