"""Spark session creation: ``local[*]`` on one machine, a cluster by the master URL."""

from __future__ import annotations

import os
import shutil
import subprocess

from fish_platform.settings import export_spark_env
from fish_platform.settings import java_home as configured_java_home

JAVA_HELP = (
    "Java 17 (or 21) is required for PySpark but was not found: install it "
    "(Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."
)


class JavaNotFoundError(RuntimeError):
    pass


def java_version(java_home: str | None = None) -> str:
    """The ``java -version`` banner, or raise :class:`JavaNotFoundError` with one clear line.

    ``java_home`` defaults to ``JAVA_HOME`` from the settings; without it, ``java`` on PATH.
    """
    java_home = java_home or configured_java_home()
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise JavaNotFoundError(JAVA_HELP)
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise JavaNotFoundError(f"{JAVA_HELP} ({exc})") from exc
    banner = (result.stderr or result.stdout).strip().splitlines()
    return banner[0] if banner else "java (unknown version)"


def build_spark_session(master: str = "local[*]", app_name: str = "fish-platform", conf: dict | None = None):
    """Create (or reuse) a SparkSession.

    In local mode the workers must run this virtualenv's interpreter (see
    :func:`fish_platform.settings.export_spark_env`).
    """
    java_version()
    from pyspark.sql import SparkSession

    export_spark_env(master)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
