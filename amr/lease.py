"""One writer per module table: a lease object next to the table.

LanceDB duplicates rows when two writers merge-insert the same new keys at once, so a job that writes a
table first takes its lease, ``<table uri>/<table>.lease.json``: the holder (the run directory), host, pid,
when it started and a heartbeat that a background thread renews. A second job finds the lease held and stops
at once, naming the holder; a lease whose heartbeat is older than its time to live (its holder died without
releasing it) is taken over. Both steps are conditional writes, so two jobs can never both win:

- on a local (or shared POSIX) disk, creation is ``O_EXCL`` and a renewal or takeover compares the lease's
  content under an ``flock`` of a guard file;
- on S3, creation is a ``PutObject`` with ``If-None-Match: *`` and a renewal or takeover one with
  ``If-Match: <the ETag read>``;
- on Google Cloud Storage, creation is an upload with ``ifGenerationMatch=0`` and a renewal or takeover one with
  ``ifGenerationMatch=<the generation read>``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from amr import storage

log = logging.getLogger(__name__)


class LeaseError(RuntimeError):
    """The table is another job's, or this job lost its lease."""


class _Store(Protocol):
    def create(self, body: bytes) -> str | None: ...  # a token, or None when the lease exists
    def read(self) -> tuple[bytes, str] | None: ...  # (body, token), or None when there is no lease
    def replace(self, body: bytes, token: str) -> str | None: ...  # the new token, or None when changed since
    def delete(self, token: str) -> None: ...  # only if unchanged since


class _LocalStore:
    def __init__(self, path: Path):
        self.path, self.guard = path, path.with_name(path.name + ".guard")
        path.parent.mkdir(parents=True, exist_ok=True)

    def create(self, body: bytes) -> str | None:
        with self._guarded():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            return _digest(body)

    def read(self) -> tuple[bytes, str] | None:
        try:
            body = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return body, _digest(body)

    def replace(self, body: bytes, token: str) -> str | None:
        with self._guarded():
            if (found := self.read()) is None or found[1] != token:
                return None
            storage.write_bytes(self.path, body)
            return _digest(body)

    def delete(self, token: str) -> None:
        with self._guarded():
            if (found := self.read()) is not None and found[1] == token:
                self.path.unlink()

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        with open(self.guard, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)


class _S3Store:
    def __init__(self, uri: str):
        import boto3
        from botocore.exceptions import ClientError

        parsed = urlparse(uri)
        self.bucket, self.key, self.ClientError = parsed.netloc, parsed.path.lstrip("/"), ClientError
        self.client = boto3.client("s3")  # endpoint, region and credentials from the AWS_* variables

    def create(self, body: bytes) -> str | None:
        return self._put(body, IfNoneMatch="*")

    def read(self) -> tuple[bytes, str] | None:
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return found["Body"].read(), found["ETag"]

    def replace(self, body: bytes, token: str) -> str | None:
        return self._put(body, IfMatch=token)

    def delete(self, token: str) -> None:
        if (found := self.read()) is not None and found[1] == token:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)

    def _put(self, body: bytes, **condition: str) -> str | None:
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]
        except self.ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return None
            raise


class _GCSStore:
    def __init__(self, uri: str):
        from google.api_core import exceptions
        from google.cloud import storage as gcs

        parsed = urlparse(uri)
        self.errors = exceptions
        # project and credentials from the environment (Application Default Credentials; STORAGE_EMULATOR_HOST)
        self.blob = gcs.Client().bucket(parsed.netloc).blob(parsed.path.lstrip("/"))

    def create(self, body: bytes) -> str | None:
        return self._upload(body, 0)

    def read(self) -> tuple[bytes, str] | None:
        try:
            body = self.blob.download_as_bytes()
        except self.errors.NotFound:
            return None
        return body, str(self.blob.generation)

    def replace(self, body: bytes, token: str) -> str | None:
        return self._upload(body, int(token))

    def delete(self, token: str) -> None:
        if (found := self.read()) is not None and found[1] == token:
            try:
                self.blob.delete(if_generation_match=int(token))
            except (self.errors.PreconditionFailed, self.errors.NotFound):
                pass

    def _upload(self, body: bytes, generation: int) -> str | None:
        try:
            self.blob.upload_from_string(body, if_generation_match=generation)
        except self.errors.PreconditionFailed:
            return None
        return str(self.blob.generation)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


STORES: dict[str, Callable[[str], _Store]] = {"s3": _S3Store, "gs": _GCSStore}
"""The object stores a lease can be kept in (conditional writes), by URI scheme; besides a local or shared disk."""


def supported(uri: str) -> None:
    """Raise ``LeaseError`` unless a lease can be kept at ``uri`` (a local or shared path, or a scheme of ``STORES``)."""
    scheme = urlparse(uri).scheme
    if storage.is_uri(uri) and scheme not in STORES:
        where = ", ".join(f"{s}://" for s in STORES)
        raise LeaseError(
            f"{uri}: a module table's lease needs conditional writes: a local or shared disk, or {where}; "
            f"{scheme}:// has none here: put modules.uri on one of those"
        )


def _store(uri: str) -> _Store:
    supported(uri)
    if not storage.is_uri(uri):
        return _LocalStore(Path(uri))
    return STORES[urlparse(uri).scheme](uri)


class Lease:
    """The lease on one table for as long as the context lasts: ``with Lease(uri, holder): ...``; ``check()``
    before each commit raises when it was lost (another job took it over after a stall)."""

    def __init__(self, table_uri: str, table: str, holder: str, ttl_s: float = 60.0):
        self.uri = storage.join(table_uri, f"{table}.lease.json")
        self.holder, self.ttl_s = holder, ttl_s
        self.store = _store(self.uri)
        self.token: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._body = {"holder": holder, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

    def __enter__(self) -> Lease:
        self.token = self.store.create(self._encoded())
        if self.token is None:
            self._take_over()
        self._beat = threading.Thread(target=self._heartbeat, name="module-table-lease", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._beat:
            self._beat.join()
        if self.token and not self.lost:
            self.store.delete(self.token)

    def check(self) -> None:
        if self.lost:
            raise LeaseError(self.lost)

    def _encoded(self) -> bytes:
        return json.dumps({**self._body, "heartbeat": time.time()}).encode()

    def _take_over(self) -> None:
        while self.token is None:
            found = self.store.read()
            if found is None:  # released meanwhile
                self.token = self.store.create(self._encoded())
                continue
            held, token = json.loads(found[0]), found[1]
            age, dead = time.time() - held["heartbeat"], self._dead(held)
            if age <= self.ttl_s and not dead:
                if held["holder"] != self.holder or held["host"] == self._body["host"]:
                    raise LeaseError(
                        f"{self.uri}: the module table is in use by {held['holder']} (host {held['host']}, pid "
                        f"{held['pid']}, heartbeat {age:.0f} s ago). One job writes a table at a time: wait for it, "
                        f"or give this job another modules.uri. A lease silent for over {self.ttl_s:.0f} s is "
                        "taken over."
                    )
                # this run directory's own lease, from another host: a resubmitted job after its node died
                log.warning("%s: held by this run on %s; waiting for it to go stale", self.uri, held["host"])
                time.sleep(self.ttl_s - age + 0.1)
                continue
            self.token = self.store.replace(self._encoded(), token)
            if self.token:
                why = "its process is gone" if dead else f"its heartbeat stopped {age:.0f} s ago"
                log.warning("took over %s from %s: %s", self.uri, held["holder"], why)

    def _dead(self, held: dict[str, Any]) -> bool:
        """Whether the holder is a process of this host that is gone (a killed job: its lease is free at once)."""
        if held["host"] != self._body["host"]:
            return False
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            token = self.store.replace(self._encoded(), self.token) if self.token else None
            if token is None:
                self.lost = f"{self.uri}: this job's lease was taken over by another job after a stall; stopping"
                log.error(self.lost)
                return
            self.token = token
