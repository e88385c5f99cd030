"""Where raw images live: a local folder or ``s3://bucket/prefix`` (boto3).

The layout is Kaggle's "A Large Scale Fish Dataset": one folder per species, possibly
nested (``Fish_Dataset/Trout/Trout/*.png``). The species is the folder that holds the image;
mask folders (``Trout GT``) are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlparse

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class RawImage:
    """One image file as listed by a store: no bytes read yet."""

    uri: str
    key: str  # path relative to the store root, with '/' separators
    species: str
    size: int
    modified: float  # seconds since the epoch


def species_for(key: str) -> str | None:
    """The species of an image from its relative key, or None when it is not a dataset image."""
    parts = PurePosixPath(key).parts
    if len(parts) < 2:
        return None  # files directly under the root have no species folder
    if any(part.startswith(".") for part in parts):
        return None
    if any(part.upper().endswith(" GT") or part.upper() == "GT" for part in parts[:-1]):
        return None  # segmentation masks in the Kaggle archive
    if PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    return parts[-2]


class ImageStore(Protocol):
    uri: str

    def list_images(self) -> Iterator[RawImage]: ...

    def read_bytes(self, uri: str) -> bytes: ...


class LocalImageStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def list_images(self) -> Iterator[RawImage]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"raw image folder {self.root} does not exist (set FISH_RAW_URI)")
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                species = species_for(key)
                if species is None:
                    continue
                stat = path.stat()
                yield RawImage(str(path), key, species, stat.st_size, stat.st_mtime)

    def read_bytes(self, uri: str) -> bytes:
        return Path(uri).read_bytes()


class S3ImageStore:
    """Objects under ``s3://bucket/prefix``; any S3-compatible endpoint (Yandex, MinIO)."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        parsed = urlparse(uri)
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.endpoint_url = endpoint_url
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from fish_platform.data.storage import s3_client

            self._client = s3_client(self.endpoint_url)
        return self._client

    def list_images(self) -> Iterator[RawImage]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                species = species_for(key)
                if species is None:
                    continue
                yield RawImage(
                    f"s3://{self.bucket}/{obj['Key']}",
                    key,
                    species,
                    int(obj["Size"]),
                    obj["LastModified"].timestamp(),
                )

    def read_bytes(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        return self.client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()


def open_store(uri: str, endpoint_url: str | None = None) -> ImageStore:
    """A store for a local path or an ``s3://`` URI."""
    if uri.startswith("s3://"):
        return S3ImageStore(uri, endpoint_url)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported raw image URI {uri!r}: use a local path or s3://bucket/prefix")
    return LocalImageStore(uri.removeprefix("file://"))
