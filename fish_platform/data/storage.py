"""Durable platform storage under one URI: a local folder or ``s3://bucket/prefix``.

Everything that outlives a run (manifests, the split ledger, dataset versions, reports) is written
through a :class:`Storage`, so the same code runs on one machine and on a cluster whose run pods
share nothing but object storage. Writes are whole-object and atomic: a local file appears under its
final name only when complete (temporary file + rename), and an S3 PUT is atomic by itself. There is
no rename on S3, so nothing here renames a folder: callers write new objects under new keys.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client for any S3-compatible endpoint (AWS, Yandex Object Storage, MinIO, moto)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10),
    )


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for both local paths and ``s3://`` URIs (no doubled slashes)."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


class Storage(Protocol):
    """What the platform needs from durable storage."""

    uri: str

    def read_bytes(self, uri: str) -> bytes: ...

    def write_bytes(self, uri: str, data: bytes) -> None: ...

    def exists(self, uri: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete_prefix(self, prefix: str) -> int: ...


class LocalStorage:
    def __init__(self, root: str | Path) -> None:
        self.uri = str(Path(root).expanduser().resolve())

    def read_bytes(self, uri: str) -> bytes:
        return Path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def exists(self, uri: str) -> bool:
        return Path(uri).exists()

    def list(self, prefix: str) -> list[str]:
        """Every file under ``prefix`` (recursive, sorted), skipping unfinished temporary files."""
        root = Path(prefix)
        if root.is_file():
            return [str(root)]
        if not root.is_dir():
            return []
        return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))

    def delete_prefix(self, prefix: str) -> int:
        root = Path(prefix)
        if root.is_file():
            root.unlink()
            return 1
        if not root.is_dir():
            return 0
        count = sum(1 for p in root.rglob("*") if p.is_file())
        shutil.rmtree(root)
        return count


class S3Storage:
    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        self.uri = uri.rstrip("/")
        self.endpoint_url = endpoint_url
        self._client = None

    def __getstate__(self) -> dict[str, Any]:  # picklable into Spark tasks: the client is rebuilt
        return {"uri": self.uri, "endpoint_url": self.endpoint_url, "_client": None}

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self.endpoint_url)
        return self._client

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        return parsed.netloc, parsed.path.lstrip("/")

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = self._split(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(uri) from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = self._split(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = self._split(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        bucket, key = self._split(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def list(self, prefix: str) -> list[str]:
        """Every object under ``prefix`` (as a folder: ``prefix/``), sorted."""
        bucket, _ = self._split(prefix)
        folder = prefix.rstrip("/") + "/"
        return sorted(f"s3://{bucket}/{key}" for key in self._iter_keys(folder))

    def delete_prefix(self, prefix: str) -> int:
        bucket, _ = self._split(prefix)
        keys = list(self._iter_keys(prefix.rstrip("/") + "/"))
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": key} for key in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        return len(keys)


def open_storage(uri: str, endpoint_url: str | None = None) -> LocalStorage | S3Storage:
    """Storage for a local path (or ``file://``) or an ``s3://`` URI."""
    if uri.startswith("s3://"):
        return S3Storage(uri, endpoint_url)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported storage URI {uri!r}: use a local path or s3://bucket/prefix")
    return LocalStorage(uri.removeprefix("file://"))


# Typed helpers over any Storage: JSON documents and Parquet tables (read whole into memory; the
# tables written here are small or one Spark partition's shard).


def read_json(storage: Storage, uri: str) -> Any:
    return json.loads(storage.read_bytes(uri))


def write_json(storage: Storage, uri: str, value: Any) -> None:
    storage.write_bytes(uri, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def write_parquet(
    storage: Storage, uri: str, table: pa.Table | pd.DataFrame, row_group_size: int = 64
) -> None:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    storage.write_bytes(uri, sink.getvalue())


def parquet_file(storage: Storage, uri: str) -> pq.ParquetFile:
    """A Parquet file to stream by record batch (local: read from disk; S3: one GET into memory)."""
    if isinstance(storage, LocalStorage):
        return pq.ParquetFile(uri)
    return pq.ParquetFile(pa.BufferReader(storage.read_bytes(uri)))


def read_parquet(storage: Storage, uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    return parquet_file(storage, uri).read(columns=columns).to_pandas()
