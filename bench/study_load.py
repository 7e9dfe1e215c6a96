"""Study load: concurrent participants answering a pair-rating study through gunicorn.

Issue 4's figure: 50 concurrent participants x 20 trials each, over loopback, against
gunicorn and PostgreSQL, store exactly 1000 responses with no item over its quota and
nothing stored twice; at least 300 responses/s with p99 under 200 ms. On the embedded SQLite
default, still no duplicate and no loss. Reference from the issue (measured earlier on this
machine, not in this run: Label Studio cannot run here): Label Studio 1.23 in its default
set-up stored 6.7 annotations/s at 50 concurrent clients, p99 21 s, 2-6% stored twice.

The server is the project's gunicorn with its gunicorn.conf.py, as in production: a worker
accepts a connection only while one of its threads is free and closes it after the response,
so each request opens a connection (as a reverse proxy in front does) and waiting requests
share the kernel's queue. The fairness line shows the spread of latency between participants.

Each participant opens the study link, consents, loads its page, then answers through the
htmx path (``HX-Request: true``): one POST stores the answer and returns the next trial, so
one request per response, and its latency is what is measured. A share of answers is sent
twice at once on two connections with the same idempotency key (a double click), counted
apart from the 1000. The answer phase starts for every client at once (a barrier) and its
wall time gives responses/s. Afterwards the database is checked: the count, quotas,
(participant, item) duplicates, unique keys, Item.answered against the responses, and every
key the server acknowledged is stored (no loss).

Baselines measured in the same run, on the same server:
- one participant alone (a sequential client, the same 20 answers on a separate study): what
  concurrency buys over one-at-a-time;
- a page that touches no database (GET /accounts/login/, the same middleware and templates),
  under the same number of clients: the framework's ceiling on this machine;
- the health probe (GET /healthz: gunicorn, Django's handler, one SELECT 1 and a broker check, before any
  middleware), under the same number of clients: what any request costs on this machine.

It also prints the CPU time per response spent by gunicorn, PostgreSQL's backends, the
clients and every other process during the answer phase (Linux /proc): on a small or shared
machine the rate is bounded by CPU, and this line says by whose. With --conn-max-age 0 the
backends exit after each request and their CPU shows under "other processes".

The study has clients*trials/K + trials items (220 for the defaults), so most items end at
their quota while the last participants still find items they have not seen; with no slack
at all the design lets a session end early, which the checks would report as short.

Each backend gets a fresh database (PostgreSQL: ``likeness_bench_load``, dropped and created;
SQLite: a file in a temporary folder), ``migrate`` and ``collectstatic`` as in production
(DEBUG off, hashed static files), and its own gunicorn on a free loopback port. Everything is
torn down on exit, and the whole invocation is bounded by --timeout.

    .venv/bin/python bench/study_load.py [--backend both|postgres|sqlite] [--clients 50]
        [--trials 20] [--workers N] [--threads N] [--worker-class gthread] [--timeout 300]

--workers and --threads default to what gunicorn.conf.py gives on this machine.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import random
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

from _server import (  # bench/_server.py
    PG_ADMIN_URL,
    drop_database,
    free_port,
    pg_admin,
    start_gunicorn,
    start_watchdog,
    stop_gunicorn,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
PG_BENCH_DB = "likeness_bench_load"
LABEL_STUDIO_RATE = 6.7  # annotations/s at 50 clients, issue 4 (not measured in this run)
LABEL_STUDIO_P99_MS = 21_000
TARGET_RATE, TARGET_P99_MS = 300.0, 200.0

TRIAL_RE = re.compile(r'name="trial" value="(\d+)"')
KEY_RE = re.compile(r'name="key" value="(\w+)"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- HTTP client ----------------------------------------------------------------------------
class Browser:
    """One participant's browser: keep-alive connections, cookies, nothing else."""

    def __init__(self, port: int, deadline: float) -> None:
        self.port = port
        self.deadline = deadline
        self.cookies: dict[str, str] = {}
        self.conns: list[http.client.HTTPConnection] = []
        self.reconnects = 0

    def _conn(self, index: int) -> http.client.HTTPConnection:
        while len(self.conns) <= index:
            self.conns.append(self._new())
        return self.conns[index]

    def _new(self) -> http.client.HTTPConnection:
        timeout = max(1.0, min(30.0, self.deadline - time.monotonic()))
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def send(self, method: str, path: str, fields: dict | None = None, *, htmx=False, conn=0):
        headers = {"Host": "127.0.0.1"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if htmx:
            headers["HX-Request"] = "true"
        body = None
        if fields is not None:
            body = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        c = self._conn(conn)
        c.request(method, path, body=body, headers=headers)
        return c

    def receive(self, conn=0) -> tuple[int, http.client.HTTPResponse, str]:
        c = self._conn(conn)
        response = c.getresponse()
        text = response.read().decode()
        for header in response.msg.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response.status, response, text

    def call(self, method: str, path: str, fields: dict | None = None, *, htmx=False):
        """One request; a keep-alive connection the server closed is reopened once (POSTs
        too: the idempotency key makes a resent answer safe)."""
        for attempt in (0, 1):
            try:
                self.send(method, path, fields, htmx=htmx)
                return self.receive()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if attempt:
                    raise
                self.conns[0].close()
                self.conns[0] = self._new()
                self.reconnects += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        for c in self.conns:
            c.close()


def parse_trial(text: str) -> tuple[str, str]:
    trial, key = TRIAL_RE.search(text), KEY_RE.search(text)
    if not trial or not key:
        raise ValueError("no trial form in the page")
    return trial.group(1), key.group(1)


def next_of(text: str) -> str:
    """The trial a response shows next: its id, "" at the end (204), "?" for anything else."""
    if not text:
        return ""
    found = TRIAL_RE.search(text)
    return found.group(1) if found else "?"


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)  # seconds, one per first submit
    acked: list[str] = field(default_factory=list)  # keys the server answered 2xx to
    sent: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)  # non-2xx/3xx only
    doubles: int = 0
    double_ok: int = 0  # both copies 2xx and both show the same next trial
    double_problem: int = 0  # one copy answered with an error message instead
    double_latencies: list[float] = field(default_factory=list)
    single_latencies: list[float] = field(default_factory=list)  # answers sent once
    finished: bool = False
    error: str = ""
    reconnects: int = 0
    reloads: int = 0  # page reloads after an error response

    def bad(self, status: int) -> None:
        if not 200 <= status < 400:
            self.statuses[status] = self.statuses.get(status, 0) + 1


def participant_session(
    port: int,
    study_path: str,
    trials: int,
    deadline: float,
    start: threading.Barrier | None,
    double_share: float,
    seed: int,
) -> ClientResult:
    """Consent, load the page, then answer `trials` trials through the htmx path."""
    result = ClientResult()
    browser = Browser(port, deadline)
    rng = random.Random(seed)
    try:
        status, _, page = browser.call("GET", study_path)
        result.bad(status)
        token = CSRF_RE.search(page)
        if status != 200 or not token:
            raise RuntimeError(f"study link answered {status}")
        csrf = token.group(1)
        status, response, _ = browser.call(
            "POST", study_path, {"csrfmiddlewaretoken": csrf, "consent": "on"}
        )
        result.bad(status)
        if status != 302:
            raise RuntimeError(f"consent answered {status}")
        page_path = response.getheader("Location")
        status, _, page = browser.call("GET", page_path)
        result.bad(status)
        trial, key = parse_trial(page)
        if start is not None:
            start.wait(timeout=max(1.0, deadline - time.monotonic()))
        # Until the server says the session is over (204); an error costs a reload, as a
        # participant would do, so one failure does not end the session.
        for _ in range(2 * trials + 2):
            if time.monotonic() > deadline:
                raise TimeoutError("time bound reached")
            fields = {"csrfmiddlewaretoken": csrf, "trial": trial, "key": key}
            fields["value"] = str(rng.randint(1, 7))
            result.sent.append(key)
            double = rng.random() < double_share
            started = time.perf_counter()
            if double:  # both copies in flight at once, on two connections
                browser.send("POST", page_path, fields, htmx=True, conn=0)
                browser.send("POST", page_path, fields, htmx=True, conn=1)
                status, _, text = browser.receive(conn=0)
                result.latencies.append(time.perf_counter() - started)
                status2, _, text2 = browser.receive(conn=1)
                result.double_latencies.append(time.perf_counter() - started)
                result.doubles += 1
                result.bad(status2)
            else:
                status, _, text = browser.call("POST", page_path, fields, htmx=True)
                result.latencies.append(time.perf_counter() - started)
                result.single_latencies.append(result.latencies[-1])
            result.bad(status)
            if double:  # both copies must show the same next trial (or both the end)
                result.double_ok += int(status2 == status and next_of(text2) == next_of(text))
                result.double_problem += int('role="alert"' in text + text2)
                if status not in (200, 204) and status2 in (200, 204):
                    status, text = status2, text2  # the copy that worked
            if status not in (200, 204):
                result.reloads += 1
                status, _, text = browser.call("GET", page_path)
                result.bad(status)
                if status == 302:  # to the done page
                    break
                trial, key = parse_trial(text)
                continue
            result.acked.append(key)
            if status == 204:
                break
            trial, key = parse_trial(text)
        else:
            raise RuntimeError("the session did not end")
        result.finished = True
    except Exception as exc:  # reported, and the checks then show what was stored
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.reconnects = browser.reconnects
        browser.close()
    return result


def run_clients(n: int, target, deadline: float, meter: CpuMeter | None = None):
    """Run `target(i, barrier)` in n threads released together; wall time of the phase after
    the barrier (until the last thread ends), and the CPU time spent meanwhile."""
    t0: list[float] = []
    cpu: dict[str, float] = {}

    def release() -> None:
        if meter is not None:
            meter.start()
        t0.append(time.perf_counter())

    barrier = threading.Barrier(n, action=release)
    results: list = [None] * n

    def work(i: int) -> None:
        results[i] = target(i, barrier)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    ended = time.perf_counter()
    if meter is not None and t0:
        cpu = meter.stop()
    return results, (ended - t0[0]) if t0 else float("nan"), cpu


def plain_requests(port: int, path: str, requests: int, deadline: float, barrier) -> ClientResult:
    """GET ``path`` again and again on one keep-alive connection (a baseline)."""
    result = ClientResult()
    browser = Browser(port, deadline)
    try:
        browser.call("GET", path)  # opens the connection
        barrier.wait(timeout=max(1.0, deadline - time.monotonic()))
        for _ in range(requests):
            started = time.perf_counter()
            status, _, _ = browser.call("GET", path)
            result.latencies.append(time.perf_counter() - started)
            result.bad(status)
        result.finished = True
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        browser.close()
    return result


class CpuMeter:
    """CPU seconds (Linux /proc) of gunicorn's processes, the benchmark database's PostgreSQL
    backends and this process (the clients), and of the whole machine, over one phase."""

    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, server_pid: int, pg_database: str | None) -> None:
        self.server_pid = server_pid
        self.pg_database = pg_database
        self.before: dict = {}

    def _proc(self, pid: int) -> tuple[int, float]:
        """(parent pid, CPU seconds) of a live process, or (0, 0.0)."""
        try:
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0, 0.0
        return int(rest[1]), (int(rest[11]) + int(rest[12])) / self.tick

    def _server(self) -> dict[int, float]:
        pids = [self.server_pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._proc(int(entry.name))[0] == self.server_pid:
                pids.append(int(entry.name))
        return {pid: self._proc(pid)[1] for pid in pids}

    def _database(self) -> dict[int, float]:
        if not self.pg_database:
            return {}
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            pids = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.pg_database]
            ).fetchall()
        return {pid: self._proc(pid)[1] for (pid,) in pids}

    @staticmethod
    def _machine() -> tuple[float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def _snapshot(self) -> dict:
        times = os.times()
        return {
            "server": self._server(),
            "database": self._database(),
            "client": times.user + times.system,
            "machine": self._machine(),
        }

    def start(self) -> None:
        self.before = self._snapshot()

    def stop(self) -> dict[str, float]:
        after, before = self._snapshot(), self.before

        def delta(name: str) -> float:
            return sum(v - before[name].get(pid, 0.0) for pid, v in after[name].items())

        busy = (after["machine"][0] - before["machine"][0]) / self.tick
        total = (after["machine"][1] - before["machine"][1]) / self.tick
        return {
            "server": delta("server"),
            "database": delta("database"),
            "client": after["client"] - before["client"],
            "machine_busy": busy,
            "machine_share": busy / total if total else float("nan"),
        }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] * 1000


def make_study(name: str, *, items: int, k: int, trials: int, texts: int):
    import io

    from annotation import services
    from annotation.services import ItemPlan
    from evaluation.imports.stimuli import dataset_import_texts

    csv = "text,label\n" + "".join(
        f'"Sentence {i} about topic {i % 7}, in a bench for {name}.",t{i % 7}\n'
        for i in range(texts)
    )
    dataset = dataset_import_texts(name=f"{name} texts", upload=io.BytesIO(csv.encode()))
    study = services.study_create(
        dataset=dataset,
        name=name,
        kind="pairs",
        items=ItemPlan(mode="random", count=items, seed=0),
        judgments_per_item=k,
        trials_per_session=trials,
        min_response_ms=0,
        consent_md="A benchmark: no person takes part.",
    )
    services.study_set_status(study=study, status="open")
    return study


def check_database(study, results: list[ClientResult], clients: int, trials: int) -> dict:
    from django.db.models import Count

    from annotation.models import Item, Participant, Response, Trial

    responses = Response.objects.filter(trial__participant__study=study)
    regular = responses.filter(trial__role="regular")
    keys = list(responses.values_list("idempotency_key", flat=True))
    per_item = dict(
        regular.values("trial__item_id").annotate(n=Count("id")).values_list("trial__item_id", "n")
    )
    items = list(Item.objects.filter(study=study).values_list("pk", "answered", "assigned"))
    acked = {k for r in results if r for k in r.acked}
    sent = {k for r in results if r for k in r.sent}
    stored = set(keys)
    return {
        "stored": len(keys),
        "regular": regular.count(),
        "expected": clients * trials,
        "over_quota": sum(answered > study.quota for _, answered, _ in items),
        "over_assigned": sum(assigned > study.quota for _, _, assigned in items),
        "full_items": sum(answered == study.quota for _, answered, _ in items),
        "items": len(items),
        "duplicate_pairs": Trial.objects.filter(participant__study=study, role="regular")
        .exclude(status="expired")
        .values("participant_id", "item_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count(),
        "duplicate_keys": len(keys) - len(stored),
        "answered_mismatch": sum(answered != per_item.get(pk, 0) for pk, answered, _ in items),
        "assigned_mismatch": sum(answered != assigned for _, answered, assigned in items),
        "lost": len(acked - stored),  # acknowledged to a client, not in the database
        "unexpected": len(stored - sent),
        "open_trials": Trial.objects.filter(participant__study=study, status="issued").count(),
        "completed": Participant.objects.filter(study=study, status="completed").count(),
        "short_sessions": sum(
            1
            for n in Participant.objects.filter(study=study)
            .annotate(n=Count("trials__response"))
            .values_list("n", flat=True)
            if n != trials
        ),
    }


def run_backend(args) -> int:
    started = time.monotonic()
    deadline = started + args.timeout
    backend = args.backend
    tmp = Path(tempfile.mkdtemp(prefix="likeness-bench-load-"))
    database_url = (
        f"postgres://postgres@127.0.0.1:5432/{PG_BENCH_DB}"
        if backend == "postgres"
        else f"sqlite:///{tmp / 'bench.sqlite3'}"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "LIKENESS_VAR_DIR": str(tmp),
        "STATIC_ROOT": str(tmp / "static"),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-only-" + "x" * 40,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATIC_MANIFEST": "1",
        "DB_CONN_MAX_AGE": str(args.conn_max_age),
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
    }
    for name in ("CELERY_BROKER_URL", "MEDIA_ROOT", "EMBEDDINGS_ROOT", "TEST_DATABASE_NAME"):
        env.pop(name, None)
    os.environ.clear()
    os.environ.update(env)
    server: subprocess.Popen | None = None

    def cleanup() -> None:
        stop_gunicorn(server)
        if backend == "postgres" and not args.keep:
            drop_database(PG_BENCH_DB)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    watchdog = start_watchdog(args.timeout, cleanup, f"[{backend}] ")
    try:
        if backend == "postgres":
            pg_admin(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
            pg_admin(f"CREATE DATABASE {PG_BENCH_DB}")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        call_command("collectstatic", verbosity=0, interactive=False)
        # The demand in items plus one session's worth: most items end at their quota, and
        # the last participants still find items they have not seen (with no slack, the
        # design lets a session end early when only already-seen items have room left).
        items = args.items or -(-args.clients * args.trials // args.k) + args.trials
        study = make_study(
            "load", items=items, k=args.k, trials=args.trials, texts=max(24, items // 4)
        )
        alone = make_study("alone", items=args.trials, k=1, trials=args.trials, texts=24)
        connections.close_all()  # SQLite: hold no lock while the server writes

        port = free_port()
        server = start_gunicorn(
            args.workers, args.worker_class, args.threads, port, tmp / "gunicorn.log", env
        )
        wait_ready(port, "/accounts/login/", server, deadline)
        config = (
            f"gunicorn {args.worker_class} {args.workers} workers x {args.threads} threads, "
            f"CONN_MAX_AGE={args.conn_max_age}"
        )

        # Baselines under the same number of clients: a page that touches no database (the
        # same middleware and templates), and the health probe (gunicorn, Django's handler and
        # one SELECT 1, no middleware, view or template: what any request costs here).
        baseline_results: list[ClientResult | None] = []

        def baseline(path: str) -> tuple[float, list[float]]:
            results, wall, _ = run_clients(
                args.clients,
                lambda i, barrier: plain_requests(port, path, args.trials, deadline, barrier),
                deadline,
            )
            baseline_results.extend(results)
            latency = [x for r in results if r for x in r.latencies]
            return len(latency) / wall, latency

        page_rate, page_latency = baseline("/accounts/login/")
        probe_rate, probe_latency = baseline("/healthz")

        # Baseline: one participant alone, answering one trial after another.
        one = participant_session(
            port, alone.participant_url(), args.trials, deadline, None, 0.0, seed=10_000
        )
        answer_time = sum(one.latencies)
        one_rate = len(one.acked) / answer_time if answer_time else float("nan")

        # The load: every client consents, then all answer at once. The clients share this
        # process with Django: freeze what is loaded so that the collector's passes over it
        # (tens of ms, every thread stopped) do not show up as server latency.
        gc.collect()
        gc.freeze()
        meter = CpuMeter(server.pid, PG_BENCH_DB if backend == "postgres" else None)
        results, wall, cpu = run_clients(
            args.clients,
            lambda i, barrier: participant_session(
                port,
                study.participant_url(),
                args.trials,
                deadline,
                barrier,
                args.double_share,
                seed=i,
            ),
            deadline,
            meter,
        )
        stop_gunicorn(server)
        server = None
        log = (tmp / "gunicorn.log").read_text(errors="replace")
        checks = check_database(study, results, args.clients, args.trials)
    finally:
        watchdog.cancel()
        cleanup()

    finished = [r for r in results if r]
    latency = [x for r in finished for x in r.latencies]
    acked = sum(len(r.acked) for r in finished)
    rate = acked / wall
    p50, p99 = pct(latency, 50), pct(latency, 99)
    doubles = sum(r.doubles for r in finished)
    double_ok = sum(r.double_ok for r in finished)
    double_problem = sum(r.double_problem for r in finished)
    bad: dict[int, int] = {}
    for r in [*finished, *[p for p in baseline_results if p], one]:
        for status, n in r.statuses.items():
            bad[status] = bad.get(status, 0) + n
    errors = [r.error for r in finished if r.error] + ([one.error] if one.error else [])
    errors += [r.error for r in baseline_results if r and r.error]
    server_errors = log.count("Internal Server Error:")  # Django's log line for each 500
    stored_right = (
        checks["stored"] == checks["regular"] == checks["expected"] == acked
        and not any(
            checks[k]
            for k in (
                "over_quota",
                "over_assigned",
                "duplicate_pairs",
                "duplicate_keys",
                "answered_mismatch",
                "assigned_mismatch",
                "lost",
                "unexpected",
                "open_trials",
                "short_sessions",
            )
        )
        and checks["completed"] == args.clients
    )
    clean = not bad and not errors and not server_errors
    ok = stored_right and clean
    meets = ok and rate >= TARGET_RATE and p99 < TARGET_P99_MS

    print(
        f"[{backend}] {args.clients} participants x {args.trials} trials, {checks['items']} "
        f"items x K={args.k}, {config}, {os.cpu_count()} CPUs, loopback"
    )
    print(
        f"[{backend}] answers: {acked} acknowledged in {wall:.2f} s = {rate:7.1f} responses/s   "
        f"p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {max(latency) * 1000 if latency else 0:6.1f} ms"
    )
    print(
        f"[{backend}] double submits (same key, two connections at once, not counted above): "
        f"{doubles} sent, {double_ok} answered 2xx with the same next trial, "
        f"{double_problem} with an error message in one copy, "
        f"p50 {pct([x for r in finished for x in r.double_latencies], 50):.1f} ms"
    )
    single = [x for r in finished for x in r.single_latencies]
    means = sorted(1000 * sum(r.latencies) / len(r.latencies) for r in finished if r.latencies)
    if means:
        print(
            f"[{backend}] fairness: mean latency per participant from {means[0]:.1f} to "
            f"{means[-1]:.1f} ms (median {means[len(means) // 2]:.1f} ms)"
        )
    print(
        f"[{backend}] answers sent once ({len(single)}; the latencies above include the first "
        f"copy of each double submit): p50 {pct(single, 50):.1f} ms, p99 {pct(single, 99):.1f} ms"
    )
    print(
        f"[{backend}] database: {checks['stored']} responses stored (expected {checks['expected']}), "
        f"{checks['regular']} regular; over quota {checks['over_quota']} "
        f"(assigned over quota {checks['over_assigned']}; {checks['full_items']}/{checks['items']} "
        f"items exactly at quota); duplicate (participant, item) {checks['duplicate_pairs']}; "
        f"duplicate keys {checks['duplicate_keys']}; Item.answered != responses "
        f"{checks['answered_mismatch']}; assigned != answered {checks['assigned_mismatch']}; "
        f"lost (acknowledged, not stored) {checks['lost']}; unexpected {checks['unexpected']}; "
        f"open trials {checks['open_trials']}; completed {checks['completed']}/{args.clients}; "
        f"short sessions {checks['short_sessions']}"
    )
    print(
        f"[{backend}] HTTP statuses other than 2xx/3xx: {bad or 'none'}; client errors: "
        f"{len(errors)}{' (' + errors[0] + ')' if errors else ''}; reconnects "
        f"{sum(r.reconnects for r in finished)}; reloads after an error {sum(r.reloads for r in finished)}; server errors logged: {server_errors}"
    )
    if cpu:
        per = 1000 / max(acked, 1)
        others = cpu["machine_busy"] - cpu["server"] - cpu["database"] - cpu["client"]
        print(
            f"[{backend}] CPU per response in the answer phase: gunicorn {cpu['server'] * per:.1f} ms"
            + (f", PostgreSQL {cpu['database'] * per:.1f} ms" if backend == "postgres" else "")
            + f", clients {cpu['client'] * per:.1f} ms, "
            f"other processes {others * per:.1f} ms; machine busy {cpu['machine_share']:.0%} "
            f"of {os.cpu_count()} CPUs"
        )
    print(
        f"[{backend}] baseline, one participant alone (measured in this run): "
        f"{one_rate:6.1f} responses/s, p50 {pct(one.latencies, 50):.1f} ms "
        f"-> concurrency speed-up {rate / one_rate:5.1f}x"
    )
    print(
        f"[{backend}] baseline, DB-free page (GET /accounts/login/) x {args.clients} clients "
        f"(measured in this run): {page_rate:7.1f} requests/s, p99 {pct(page_latency, 99):.1f} ms "
        f"-> answers run at {rate / page_rate:5.1%} of it"
    )
    print(
        f"[{backend}] floor, health probe (GET /healthz: SELECT 1 and a broker check, no middleware or view) "
        f"x {args.clients} clients (measured in this run): {probe_rate:7.1f} requests/s, "
        f"p99 {pct(probe_latency, 99):.1f} ms -> answers run at {rate / probe_rate:5.1%} of it"
    )
    print(
        f"[{backend}] reference, Label Studio 1.23 (figure from issue 4, NOT measured in this "
        f"run): {LABEL_STUDIO_RATE} /s, p99 {LABEL_STUDIO_P99_MS / 1000:.0f} s -> "
        f"{rate / LABEL_STUDIO_RATE:5.1f}x the rate, p99 {LABEL_STUDIO_P99_MS / p99:5.0f}x lower"
    )
    target = (
        f"target >= {TARGET_RATE:.0f}/s and p99 < {TARGET_P99_MS:.0f} ms: "
        f"{'met' if meets else 'NOT met'}; "
        if backend == "postgres"
        else ""
    )
    print(
        f"[{backend}] {target}stored exactly once, no loss, no duplicate, within quota: "
        f"{'yes' if stored_right else 'NO'}; every request answered without an error: "
        f"{'yes' if clean else 'NO'}"
    )
    raised = Counter(
        line[:160] for line in log.splitlines() if re.match(r"[\w.]+(Error|Exception): ", line)
    )
    for line, n in raised.most_common(3):
        print(f"[{backend}] raised in the server {n} times: {line}")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["both", "postgres", "sqlite"], default="both")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--k", type=int, default=5, help="judgments per item (the quota)")
    parser.add_argument(
        "--items", type=int, default=0, help="items (default: clients*trials/k + trials)"
    )
    parser.add_argument("--double-share", type=float, default=0.05)
    server = runpy.run_path(str(ROOT / "gunicorn.conf.py"))  # production's defaults
    parser.add_argument("--workers", type=int, default=server["workers"])
    parser.add_argument("--threads", type=int, default=server["threads"])
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--conn-max-age", type=int, default=60, help="DB_CONN_MAX_AGE")
    parser.add_argument("--timeout", type=float, default=300, help="seconds, whole invocation")
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    args = parser.parse_args()

    if args.backend != "both":
        sys.exit(run_backend(args))
    # Each backend in its own process: Django reads DATABASE_URL once per process.
    deadline = time.monotonic() + args.timeout
    passthrough = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in vars(args).items()
        if name not in ("backend", "timeout", "keep")
    ] + (["--keep"] if args.keep else [])
    status = 0
    for backend in ("postgres", "sqlite"):
        remaining = deadline - time.monotonic()
        if remaining < 10:
            print(f"[{backend}] skipped: the time bound is spent")
            status = 1
            continue
        command = [sys.executable, __file__, *passthrough, "--backend", backend]
        command += ["--timeout", f"{remaining:.0f}"]
        child = subprocess.Popen(command, start_new_session=True)
        try:
            status |= child.wait(timeout=remaining + 30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            print(f"[{backend}] killed: over the time bound")
            status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
