"""A real S3 endpoint for tests: moto's server on a loopback port, and boto3 talking HTTP to it."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from tests.helpers.ports import free_port

S3_PREFIX = "trending/artifacts"


@contextmanager
def moto_s3_client() -> Iterator[object]:
    """A boto3 client talking HTTP to a moto server on loopback (not the in-process mock)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    with pytest.MonkeyPatch.context() as mp:
        # Real S3 evaluates `If-None-Match: *` atomically; moto checks, then writes, in two
        # steps. Serialising moto's PutObject handler restores S3's guarantee, so the
        # concurrency test measures the registry, not a race inside the emulator.
        put_lock = threading.Lock()
        original_put = S3Response.put_object

        def atomic_put(self, *args, **kwargs):
            with put_lock:
                return original_put(self, *args, **kwargs)

        mp.setattr(S3Response, "put_object", atomic_put)
        mp.setattr(logging.getLogger("werkzeug"), "level", logging.ERROR)  # no access log
        server.start()
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_S3", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                     "https_proxy"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        client = boto3.session.Session().client(
            "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(max_pool_connections=32, retries={"max_attempts": 2}),
        )
        try:
            yield client
        finally:
            server.stop()


def new_bucket(client) -> str:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return bucket


def saver(files: dict[str, bytes]) -> Callable[[Path], None]:
    """A registry `save` callback writing `files` (relative name -> bytes)."""
    def save(directory: Path) -> None:
        for name, data in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
    return save
