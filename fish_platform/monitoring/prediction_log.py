"""Read the prediction log back (drift, the challenger report, feedback): one DataFrame of rows.

The service writes it (``serving.prediction_log``) in the layout of
:mod:`fish_platform.monitoring.log_schema`; this reads any number of days of it from a folder or S3.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from datetime import date as Date

import pandas as pd
import pyarrow as pa

from fish_platform.data.storage import Storage, join, open_storage, parquet_file
from fish_platform.monitoring.log_schema import PREDICTION_SCHEMA, PREDICTIONS_PREFIX, partition


def _day(value: str | Date | datetime) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, Date):
        return value.isoformat()
    return Date.fromisoformat(value).isoformat()


def log_files(storage: Storage, data_uri: str, prefix: str, days: Iterable[str] | None = None) -> list[str]:
    """The Parquet files of a log (``predictions`` or ``feedback``), of ``days`` or all of them."""
    root = join(data_uri, prefix)
    if days is None:
        uris = storage.list(root)
    else:
        uris = [uri for day in days for uri in storage.list(join(root, partition(day)))]
    return sorted(uri for uri in uris if uri.endswith(".parquet") and "/date=" in uri)


def read_log(
    data_uri: str,
    prefix: str,
    schema: pa.Schema,
    date: str | Date | datetime | None = None,
    since: str | Date | datetime | None = None,
    until: str | Date | datetime | None = None,
    columns: list[str] | None = None,
    s3_endpoint_url: str | None = None,
    storage: Storage | None = None,
) -> pd.DataFrame:
    """Rows of one day (``date``), of ``since``..``until`` (inclusive, UTC days), or of all days."""
    storage = storage or open_storage(data_uri, s3_endpoint_url)
    days: list[str] | None = None
    if date is not None:
        days = [_day(date)]
    elif since is not None:
        first = Date.fromisoformat(_day(since))
        last = Date.fromisoformat(_day(until)) if until is not None else datetime.now(UTC).date()
        days = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    wanted = columns or schema.names
    tables = [
        parquet_file(storage, uri).read(columns=[c for c in wanted if c in schema.names])
        for uri in log_files(storage, data_uri, prefix, days)
    ]
    if not tables:
        return schema.empty_table().select(wanted).to_pandas()
    table = pa.concat_tables(tables, promote_options="permissive")
    return (
        table.to_pandas().sort_values("ts", kind="stable", ignore_index=True)
        if "ts" in wanted
        else table.to_pandas()
    )


def read_predictions(
    data_uri: str,
    date: str | Date | datetime | None = None,
    since: str | Date | datetime | None = None,
    until: str | Date | datetime | None = None,
    columns: list[str] | None = None,
    request_id: str | None = None,
    s3_endpoint_url: str | None = None,
    storage: Storage | None = None,
) -> pd.DataFrame:
    """The prediction log as a DataFrame (columns of PREDICTION_SCHEMA), oldest first.

    ``request_id`` keeps the rows of one request (the feedback lookup of a request the service has
    forgotten). Read whole into memory: ask for the days and columns you need.
    """
    frame = read_log(
        data_uri, PREDICTIONS_PREFIX, PREDICTION_SCHEMA, date, since, until, columns, s3_endpoint_url, storage
    )
    if request_id is not None and "request_id" in frame:
        frame = frame[frame["request_id"] == request_id].reset_index(drop=True)
    return frame
