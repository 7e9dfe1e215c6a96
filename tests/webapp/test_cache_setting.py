"""CACHE_URL: the web processes share what they compute through Redis; unset, each keeps
its own in memory; anything else is refused at start with the variable named."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

SHOW = (
    "import django; django.setup(); from django.core.cache import caches; import sys; "
    "cache = caches['default']; "
    "key, value = sys.argv[1:3]; "
    "value and cache.set(key, value, 60); "
    "print(type(cache).__name__, cache.get(key))"
)


def _python(cache_url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CACHE_URL"}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    if cache_url is not None:
        env["CACHE_URL"] = cache_url
    return subprocess.run(
        [sys.executable, "-c", SHOW, *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_two_processes_share_what_one_computed_through_redis():
    key = f"likeness-test-{uuid.uuid4().hex}"
    url = "redis://127.0.0.1:6379/14"
    first = _python(url, key, "computed once")
    second = _python(url, key, "")
    assert first.returncode == 0, first.stderr
    assert second.stdout.split() == ["RedisCache", "computed", "once"], second.stderr


def test_without_cache_url_each_process_keeps_its_own():
    key = f"likeness-test-{uuid.uuid4().hex}"
    assert _python(None, key, "x").stdout.split() == ["LocMemCache", "x"]
    assert _python(None, key, "").stdout.split() == ["LocMemCache", "None"]


def test_a_cache_url_that_is_not_redis_is_refused_by_name():
    result = _python("memcached://127.0.0.1:11211", "k", "")
    assert result.returncode != 0
    assert "CACHE_URL='memcached://127.0.0.1:11211' is not a redis:// or rediss:// address" in (
        result.stderr
    )
