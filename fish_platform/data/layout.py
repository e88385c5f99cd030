"""Where durable platform state lives under ``FISH_DATA_URI``, and how a dataset version is read.

```
<FISH_DATA_URI>/
  manifests/raw_manifest.parquet         the raw listing with content hashes (raw_fish_images)
  processed/size=<S>/part-*.parquet      decoded + resized images by sha256, reused across runs
  dataset/current.json                   the pointer: which version is the latest good one
  dataset/versions/<id>/                 one immutable version per fish_dataset materialization
    images/split=<train|val|test>/part-*.parquet
    splits.parquet                       the split ledger: every image ever assigned, and its split
    labels.json  quarantine.json  duplicates.json
    version.json                         written last: a version without it is incomplete
  dagster-io/                            Dagster asset outputs (IO manager)
  mlflow/artifacts/                      MLflow artifacts when MLflow runs without a server
```
A version is complete when ``version.json`` exists and current once ``current.json`` names it; a
crash before either leaves the previous version in use, with its own ledger.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fish_platform.data.splits import SPLITS
from fish_platform.data.storage import (
    Storage,
    join,
    open_storage,
    parquet_file,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
)

READ_BATCH_ROWS = 256
LEDGER_COLUMNS = ["sha256", "split", "species"]
# Columns of a dataset version's image rows; ``split`` is kept in the file as well as in the path.
IMAGE_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("species", pa.string()),
        ("label", pa.int32()),
        ("split", pa.string()),
        ("image", pa.binary()),
        ("uri", pa.string()),
        ("orig_width", pa.int32()),
        ("orig_height", pa.int32()),
    ]
)


class DatasetNotFound(FileNotFoundError):
    pass


class ConcurrentDatasetWrite(RuntimeError):
    """Another run committed a dataset version while this one was building on an older one."""


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable dataset version: a folder (local or ``s3://``) in the layout above."""

    uri: str
    endpoint_url: str | None = None

    @property
    def version_id(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.uri, self.endpoint_url)

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "endpoint_url": self.endpoint_url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "uri", state["uri"])
        object.__setattr__(self, "endpoint_url", state["endpoint_url"])

    # -- paths ---------------------------------------------------------------------------------
    def images_prefix(self, split: str) -> str:
        return join(self.uri, "images", f"split={split}")

    def shard_uri(self, split: str, name: str) -> str:
        return join(self.images_prefix(split), f"part-{name}.parquet")

    @property
    def labels_uri(self) -> str:
        return join(self.uri, "labels.json")

    @property
    def ledger_uri(self) -> str:
        return join(self.uri, "splits.parquet")

    @property
    def quarantine_uri(self) -> str:
        return join(self.uri, "quarantine.json")

    @property
    def duplicates_uri(self) -> str:
        return join(self.uri, "duplicates.json")

    @property
    def marker_uri(self) -> str:
        return join(self.uri, "version.json")

    # -- readers -------------------------------------------------------------------------------
    def is_complete(self) -> bool:
        return self.storage.exists(self.marker_uri)

    def labels(self) -> dict[str, Any]:
        """``labels.json``: label order (the model's output order), image size, split counts."""
        try:
            return read_json(self.storage, self.labels_uri)
        except FileNotFoundError as exc:
            raise DatasetNotFound(
                f"{self.labels_uri} not found: build the dataset (fish_dataset) first"
            ) from exc

    def split_files(self, split: str) -> list[str]:
        """The Parquet shards of one split, in a stable order."""
        files = [uri for uri in self.storage.list(self.images_prefix(split)) if uri.endswith(".parquet")]
        if not files:
            raise DatasetNotFound(f"no Parquet files for split {split!r} under {self.images_prefix(split)}")
        return files

    def iter_rows(
        self, files: list[str], columns: list[str], rng: np.random.Generator | None = None
    ) -> Iterator[dict[str, Any]]:
        """Rows as dicts, one record batch in memory at a time; ``rng`` shuffles the file order."""
        order = list(files) if rng is None else [files[i] for i in rng.permutation(len(files))]
        for uri in order:
            for batch in parquet_file(self.storage, uri).iter_batches(
                batch_size=READ_BATCH_ROWS, columns=columns
            ):
                yield from batch.to_pylist()

    def count_rows(self, files: list[str]) -> int:
        return sum(parquet_file(self.storage, uri).metadata.num_rows for uri in files)

    def read_split(self, split: str, columns: list[str] | None = None) -> pd.DataFrame:
        frames = [read_parquet(self.storage, uri, columns) for uri in self.split_files(split)]
        return pd.concat(frames, ignore_index=True)

    def read_all(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Rows of every split (tests, checks and small tools)."""
        frames = []
        for split in SPLITS:
            try:
                frames.append(self.read_split(split, columns))
            except DatasetNotFound:
                continue
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    def read_ledger(self) -> pd.DataFrame:
        if not self.storage.exists(self.ledger_uri):
            return empty_ledger()
        return read_parquet(self.storage, self.ledger_uri, LEDGER_COLUMNS)

    def quarantine(self) -> list[dict]:
        return read_json(self.storage, self.quarantine_uri)

    def duplicates(self) -> list[dict]:
        return read_json(self.storage, self.duplicates_uri)

    # -- writers (each one whole object; the marker last) ---------------------------------------
    def write_shard(self, split: str, name: str, rows: pa.Table | pd.DataFrame) -> str:
        uri = self.shard_uri(split, name)
        if isinstance(rows, pd.DataFrame):
            rows = pa.Table.from_pandas(rows, schema=IMAGE_SCHEMA, preserve_index=False)
        write_parquet(self.storage, uri, rows, row_group_size=16)
        return uri

    def write_ledger(self, ledger: pd.DataFrame) -> None:
        write_parquet(self.storage, self.ledger_uri, ledger[LEDGER_COLUMNS].reset_index(drop=True))

    def write_labels(self, content: dict[str, Any]) -> None:
        write_json(self.storage, self.labels_uri, content)

    def write_reports(self, quarantined: list[dict], duplicates: list[dict]) -> None:
        write_json(self.storage, self.quarantine_uri, quarantined)
        write_json(self.storage, self.duplicates_uri, duplicates)

    def write_marker(self, content: dict[str, Any]) -> None:
        write_json(self.storage, self.marker_uri, content)


def empty_ledger() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="object") for column in LEDGER_COLUMNS})


def as_version(dataset: DatasetVersion | str, endpoint_url: str | None = None) -> DatasetVersion:
    """A version from a handle or a folder/URI that holds one (tests and tools pass folders)."""
    return dataset if isinstance(dataset, DatasetVersion) else DatasetVersion(str(dataset), endpoint_url)


def new_version_id(run_id: str | None = None, now: float | None = None) -> str:
    """Sortable by time: ``20261201T120000123456Z-<run id prefix>``."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
    return f"{stamp}-{(run_id or 'local')[:8]}"


@dataclass(frozen=True)
class PlatformLayout:
    """The durable layout rooted at ``FISH_DATA_URI``."""

    root: str
    endpoint_url: str | None = None

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.root, self.endpoint_url)

    @property
    def manifest_uri(self) -> str:
        return join(self.root, "manifests", "raw_manifest.parquet")

    def processed_prefix(self, image_size: int) -> str:
        return join(self.root, "processed", f"size={image_size}")

    @property
    def versions_prefix(self) -> str:
        return join(self.root, "dataset", "versions")

    @property
    def pointer_uri(self) -> str:
        return join(self.root, "dataset", "current.json")

    @property
    def mlflow_artifacts_uri(self) -> str:
        return join(self.root, "mlflow", "artifacts")

    @property
    def dagster_io_uri(self) -> str:
        return join(self.root, "dagster-io")

    def version(self, version_id: str) -> DatasetVersion:
        return DatasetVersion(join(self.versions_prefix, version_id), self.endpoint_url)

    def current_version(self) -> DatasetVersion | None:
        """The latest committed version, or None before the first one."""
        if not self.storage.exists(self.pointer_uri):
            return None
        return self.version(read_json(self.storage, self.pointer_uri)["version"])

    def commit(self, version: DatasetVersion, base: DatasetVersion | None) -> None:
        """Make ``version`` current, unless another run committed since ``base`` was read.

        The check and the pointer write are two requests, so two commits in the same instant could
        still race: the run queue (one dataset-writing run at a time) is the lock; this check makes a
        lost race fail loudly instead of silently replacing a newer version.
        """
        if not version.is_complete():
            raise RuntimeError(f"dataset version {version.uri} is incomplete (no version.json)")
        current = self.current_version()
        if (current and current.uri) != (base and base.uri):
            raise ConcurrentDatasetWrite(
                f"dataset version {current.version_id if current else None} was committed while this run "
                f"built {version.version_id} on {base.version_id if base else 'nothing'}; "
                "run fish_dataset again to build on it"
            )
        write_json(
            self.storage, self.pointer_uri, {"version": version.version_id, "committed_at": time.time()}
        )

    def version_ids(self) -> list[str]:
        """Every version folder's id, oldest first."""
        prefix = self.versions_prefix.rstrip("/") + "/"
        ids = {uri[len(prefix) :].split("/", 1)[0] for uri in self.storage.list(self.versions_prefix)}
        return sorted(ids)

    def prune(self, keep: int) -> list[str]:
        """Delete complete versions beyond the newest ``keep`` and incomplete ones older than current.

        The current version is never deleted; an incomplete version newer than the current one may
        belong to a run still writing, so it stays.
        """
        current = self.current_version()
        if current is None:
            return []
        ids = self.version_ids()
        complete = [v for v in ids if self.version(v).is_complete()]
        retained = set(complete[-max(keep, 1) :]) | {current.version_id}
        doomed = [v for v in ids if v not in retained and (v in complete or v < current.version_id)]
        for version_id in doomed:
            self.storage.delete_prefix(self.version(version_id).uri)
        return doomed
