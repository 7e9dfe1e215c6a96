"""An S3-compatible object store on this machine, for the tests of storage through an object
store: moto in server mode, a real HTTP server in a subprocess speaking the S3 API (boto3
talks to it as to any store). Production uses a real store (Amazon S3, MinIO, Ceph RGW).

``moto_server`` starts one per test session; ``object_store`` gives each test a bucket of
its own and points the test process's storages (media and embeddings) at it. Modules that
use them import both (``moto_server_fixture``, ``object_store_fixture``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from webapp.settings import object_storage

READY_SECONDS = 30
REGION = "us-east-1"
# moto accepts any credentials; boto3 needs some (a real store would check them).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "likeness-test",
    "AWS_SECRET_ACCESS_KEY": "likeness-test-secret",
}


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str
    bucket: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", ()))

    def read(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def env(self, cache: Path, *, bucket: str | None = None) -> dict[str, str]:
        """What a worker on another machine is given to use this store."""
        return {
            "STORAGE_BUCKET": bucket or self.bucket,
            "STORAGE_ENDPOINT_URL": self.endpoint,
            "STORAGE_REGION": REGION,
            "STORAGE_CACHE_DIR": str(cache),
            **CREDENTIALS,
        }

    def storages(self, *, bucket: str | None = None) -> dict[str, Any]:
        """The STORAGES entries of media and embeddings in this store."""
        where = {"bucket": bucket or self.bucket, "endpoint_url": self.endpoint, "region": REGION}
        return {
            "default": object_storage("media", **where),
            "embeddings": object_storage("embeddings", **where),
        }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session", name="moto_server")
def moto_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS},
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"moto's S3 server did not start:\n{log_path.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(name="object_store")
def object_store_fixture(
    moto_server: str, settings: Any, monkeypatch: pytest.MonkeyPatch, isolated_storage: Path
) -> ObjectStore:
    """A fresh bucket; media and embeddings of the test process stored in it, and this
    process's cache in a folder of its own."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    store = ObjectStore(moto_server, f"likeness-{uuid.uuid4().hex[:12]}")
    store.client().create_bucket(Bucket=store.bucket)
    settings.STORAGES = {**settings.STORAGES, **store.storages()}
    settings.STORAGE_CACHE_DIR = isolated_storage / "web-cache"
    return store
