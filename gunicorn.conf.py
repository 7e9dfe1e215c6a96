"""gunicorn's settings for Likeness, read from the working directory (`gunicorn webapp.wsgi`):
docker/compose.yml's web service and the benchmarks use them. WEB_WORKERS (default: the CPU
count plus one, at most 12) and WEB_THREADS (default 2) size the server; command-line flags override any of
these. Keep workers x threads below PostgreSQL's max_connections: connections persist."""

import os

worker_class = "gthread"
# One process per core (plus one) with few threads each: the threads of a process take turns
# holding Python's lock, and more processes than cores switch in and out. On 2 cores, 3 x 2
# served about a fifth more answers per second than 4 x 2 (four interleaved runs each of
# bench/study_load.py --workers/--threads), and 2 x 8 did worse than both.
# The leaderboard meets its target in this configuration too (bench/leaderboard_load.py
# --configs gthread:3x2:60,sync:3:60, cached boards: p95 under 150 ms at 16 clients). On this
# 2-core machine, shared with other work that took 18-70% of its CPU during a phase, gthread
# 3 x 2 gave p95 149, 96 and 93 ms and sync 3 workers 197 and 57 ms (the 57 in the quietest
# phase). Sync was not measured on the study answer path, whose requests wait on PostgreSQL
# while a second thread of the process could work. Issue 5's 182 ms (sync 97 ms) was gthread
# 2 x 8 accepting greedily, before the fair queueing below, when a warm leaderboard request
# took 8 ms in process (2.3 ms now).
# Capped: on a big host, many workers' persistent connections would exhaust PostgreSQL's
# (100 by default, shared with the Celery workers).
workers = int(os.environ.get("WEB_WORKERS") or min((os.cpu_count() or 1) + 1, 12))
threads = int(os.environ.get("WEB_THREADS") or 2)

# Fair queueing. A worker takes a connection only while one of its threads is free, so the
# requests that wait stay in the kernel's accept queue, shared by all workers and served first
# come, first served. By default a gthread worker accepts everything it can: requests then
# queue behind whichever worker took them, and under load one worker's queue grows while the
# other idles. That needs connections closed after each response (an idle keep-alive
# connection would hold a slot), which is what a reverse proxy in front does anyway.
# Measured with bench/study_load.py (50 participants): p99/p50 went from about 2.0 to 1.5.
worker_connections = threads
keepalive = 0

timeout = 120
graceful_timeout = 30

# gunicorn 25+ opens a control socket (for gunicornc) at one path per user, which each new
# server takes from the last: tests and benchmarks start several. Likeness does not use it.
control_socket_disable = True
