"""The ``fish-platform`` command: sample data, Kaggle download, registry promotion, checks."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fish_platform.logs import configure_logging

log = logging.getLogger("fish_platform.cli")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 256x192, got {text!r}") from exc
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError("size must be at least 16x16")
    return width, height


def cmd_sample_data(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fish_platform.data.synthetic import generate_dataset

    with tqdm(total=0, unit="img", desc="generating synthetic fish") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        summary = generate_dataset(
            Path(args.dir),
            species=args.species,
            per_species=args.per_species,
            size=args.size,
            corrupt=args.corrupt,
            duplicates=args.duplicates,
            seed=args.seed,
            progress=progress,
        )
    print(
        f"SYNTHETIC data (procedural drawings, not real photos): {summary.total_files} files, "
        f"{len(summary.species)} species, {len(summary.corrupt)} corrupt, "
        f"{len(summary.duplicates)} duplicates in {summary.out_dir}"
    )
    return 0


def cmd_download_kaggle(args: argparse.Namespace) -> int:
    from fish_platform.data.kaggle import KaggleDownloadError, download_kaggle

    try:
        path = download_kaggle(Path(args.dir))
    except KaggleDownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"downloaded to {path}; use it with FISH_RAW_URI={path}")
    return 0


def _registry_client():
    from mlflow import MlflowClient

    from fish_platform.settings import load_settings

    settings = load_settings()
    client = MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri,
        registry_uri=settings.mlflow_registry_uri or settings.mlflow_tracking_uri,
    )
    return client, settings.model_name


def _run_registry_command(action: Callable[[Any, str], str]) -> int:
    """Run ``action(client, model_name)`` against the registry and print the line it returns.

    A :class:`~fish_platform.registry.RegistryError` or an MLflow error (``MlflowException``, of
    which ``RestException`` is one) ends the command as ``download-kaggle`` does: one line
    ``error: <message>`` on stderr and exit code 2, no traceback.
    """
    from mlflow.exceptions import MlflowException

    from fish_platform.registry import RegistryError

    try:
        client, model_name = _registry_client()
        done = action(client, model_name)
    except (RegistryError, FileExistsError, ValueError) as exc:
        message = str(exc)
    except MlflowException as exc:
        lines = [line.strip() for line in exc.message.splitlines() if line.strip()]
        message = lines[0] if lines else type(exc).__name__
    else:
        print(done)
        return 0
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_promote(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from fish_platform import registry
    from fish_platform.contract import PRODUCTION_ALIAS, mlflow_error_is
    from fish_platform.logs import redact_url
    from fish_platform.settings import load_settings

    if (args.version is None) == (args.from_report is None):
        both = ", not both" if args.version is not None else ""
        print(f"error: name a VERSION or pass --from-report{both}", file=sys.stderr)
        return 2

    def promote(client: Any, model_name: str) -> str:
        if args.from_report is not None:
            return _promote_from_report(client, model_name, args.from_report, args.reason)
        reason = args.reason or "promoted by hand (CLI)"
        try:
            registry.promote(client, model_name, str(args.version), reason=reason)
        except MlflowException as exc:
            if not mlflow_error_is(exc, "RESOURCE_DOES_NOT_EXIST"):
                raise
            settings = load_settings()
            where = redact_url(settings.mlflow_registry_uri or settings.mlflow_tracking_uri)
            missing = f"{model_name} version {args.version} does not exist in the registry at {where}"
            raise registry.RegistryError(missing) from exc
        return f"{model_name} version {args.version} is now @{PRODUCTION_ALIAS}"

    return _run_registry_command(promote)


def _promote_from_report(client: Any, model_name: str, path: str, reason: str | None) -> str:
    """Promote the challenger a report recommends, if its champion is still @production."""
    from fish_platform import registry
    from fish_platform.contract import PRODUCTION_ALIAS
    from fish_platform.data.storage import join, open_storage, read_json
    from fish_platform.monitoring.challenger import LATEST_REPORT, promotion_from_report
    from fish_platform.settings import load_settings

    settings = load_settings()
    path = path or join(settings.data_uri, LATEST_REPORT)
    storage = open_storage(path, settings.s3_endpoint_url)
    if not storage.exists(path):
        raise registry.RegistryError(f"no challenger report at {path}; materialize challenger_report first")
    report = read_json(storage, path)
    champion = registry.get_champion(client, model_name)
    version = promotion_from_report(report, model_name, str(champion.version) if champion else None)
    why = reason or f"challenger report of {report.get('generated_at', '?')}: {report.get('reason', '')}"
    registry.promote(client, model_name, version, reason=why, decision="challenger_report")
    return f"{model_name} version {version} is now @{PRODUCTION_ALIAS} (from {path})"


def cmd_challenger(args: argparse.Namespace) -> int:
    """Set or clear the ``challenger`` alias (the version serving shadows the champion with)."""
    from mlflow.exceptions import MlflowException

    from fish_platform import registry
    from fish_platform.contract import CHALLENGER_ALIAS, mlflow_error_is

    def challenger(client: Any, model_name: str) -> str:
        if args.action == "clear":
            version = registry.clear_challenger(client, model_name)
            return f"{model_name} @{CHALLENGER_ALIAS} cleared (was version {version})"
        if args.version is None:
            raise registry.RegistryError("name the VERSION to set as challenger")
        reason = args.reason or "set by hand (CLI)"
        try:
            registry.set_challenger(client, model_name, str(args.version), reason)
        except MlflowException as exc:
            if not mlflow_error_is(exc, "RESOURCE_DOES_NOT_EXIST"):
                raise
            raise registry.RegistryError(f"{model_name} version {args.version} does not exist") from exc
        return f"{model_name} version {args.version} is now @{CHALLENGER_ALIAS}"

    return _run_registry_command(challenger)


def cmd_rollback(args: argparse.Namespace) -> int:
    from fish_platform import registry
    from fish_platform.contract import PRODUCTION_ALIAS

    def rollback(client: Any, model_name: str) -> str:
        version = registry.rollback(client, model_name, reason=args.reason or "rolled back by hand (CLI)")
        return f"{model_name} @{PRODUCTION_ALIAS} rolled back to version {version}"

    return _run_registry_command(rollback)


def cmd_export(args: argparse.Namespace) -> int:
    """A registered version as a self-contained bundle for a device: model file, labels, input size."""
    from fish_platform.contract import model_version_uri

    def export(client: Any, model_name: str) -> str:
        import mlflow

        from fish_platform.ml.export import export_logged_model
        from fish_platform.settings import load_settings

        settings = load_settings()
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_registry_uri or settings.mlflow_tracking_uri)
        client.get_model_version(model_name, str(args.version))  # a missing version: one clear error
        uri = model_version_uri(model_name, args.version)
        folder = export_logged_model(uri, args.format, Path(args.dir), overwrite=args.overwrite)
        return f"{model_name} version {args.version} exported as {args.format} to {folder}"

    return _run_registry_command(export)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check the prerequisites a run needs, one line each."""
    from fish_platform.data.spark import JavaNotFoundError, java_version
    from fish_platform.settings import load_settings

    ok = True
    try:
        print(f"java: {java_version()}")
    except JavaNotFoundError as exc:
        print(f"java: MISSING - {exc}")
        ok = False
    settings = load_settings()
    print(
        f"profile: {settings.profile}; durable data: {settings.data_uri}; scratch: {settings.data_dir}; "
        f"raw images: {settings.raw_uri}; spark: {settings.pipeline.spark_master}"
    )
    if settings.durable_on_s3 and settings.mlflow_tracking_uri.startswith("sqlite:"):
        print("mlflow: WARNING - FISH_DATA_URI is on S3 but MLflow's store is a local SQLite file: "
              "set MLFLOW_TRACKING_URI to PostgreSQL or a tracking server")
        ok = False
    print(
        f"mlflow: {settings.mlflow_tracking_uri}; "
        f"redis: {settings.redis_url or 'in-process LRU (REDIS_URL unset)'}"
    )
    return 0 if ok else 1


def cmd_feedback(args: argparse.Namespace) -> int:
    """Review user corrections (``fish_platform.monitoring.feedback``): list, accept, reject."""
    from fish_platform.data.storage import open_storage
    from fish_platform.monitoring import feedback
    from fish_platform.settings import load_settings

    settings = load_settings()
    endpoint = settings.s3_endpoint_url
    shas = None if args.action == "list" or args.all else args.sha256
    if args.action != "list" and not args.all and not args.sha256:
        print("error: name the images to decide on (SHA256 prefixes) or pass --all", file=sys.stderr)
        return 2
    try:
        if args.action == "list":
            pending = feedback.list_pending(open_storage(settings.data_uri, endpoint), settings.data_uri)
            for item in pending:
                if args.species in (None, item.label):
                    print(f"{item.sha256}  {item.label}  {item.uri}")
            return 0
        if args.action == "accept":
            share = settings.serving.feedback_audit_share
            decisions = feedback.accept(
                settings.data_uri, settings.raw_uri, shas, args.species, share, endpoint
            )
        else:
            decisions = feedback.reject(settings.data_uri, shas, args.species, endpoint)
    except feedback.FeedbackError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    for decision in decisions:
        where = f"{decision.destination}: {decision.uri}"
        print(f"{decision.decision} {decision.sha256[:12]} {decision.label} -> {where}")
    print(f"{len(decisions)} image(s) {args.action}ed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fish-platform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sample = sub.add_parser("sample-data", help="generate SYNTHETIC procedural fish images (Kaggle layout)")
    sample.add_argument("dir")
    sample.add_argument("--species", type=int, default=5)
    sample.add_argument("--per-species", type=int, default=40)
    sample.add_argument("--size", type=_size, default=None, help="WxH; default: varied sizes")
    sample.add_argument("--corrupt", type=int, default=0, help="extra corrupt files to add")
    sample.add_argument("--duplicates", type=int, default=0, help="extra exact duplicates to add")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_sample_data)

    kaggle = sub.add_parser(
        "download-kaggle", help='download "A Large Scale Fish Dataset" (needs credentials)'
    )
    kaggle.add_argument("dir")
    kaggle.set_defaults(func=cmd_download_kaggle)

    promote = sub.add_parser("promote", help="move the production alias to VERSION by hand")
    promote.add_argument("version", type=int, nargs="?")
    promote.add_argument(
        "--from-report",
        nargs="?",
        const="",
        metavar="PATH",
        help="promote the challenger the report recommends (default <FISH_DATA_URI>/reports/challenger/"
        "latest.json), only if its champion is still @production",
    )
    promote.add_argument("--reason")
    promote.set_defaults(func=cmd_promote)

    challenger = sub.add_parser("challenger", help="set or clear the challenger alias (shadowed in serving)")
    challenger.add_argument("action", choices=("set", "clear"))
    challenger.add_argument("version", type=int, nargs="?")
    challenger.add_argument("--reason")
    challenger.set_defaults(func=cmd_challenger)

    rollback = sub.add_parser("rollback", help="move the production alias back to the previous champion")
    rollback.add_argument("--reason")
    rollback.set_defaults(func=cmd_rollback)

    export = sub.add_parser("export", help="write VERSION as a self-contained model for a device")
    export.add_argument("version", type=int)
    export.add_argument("dir")
    export.add_argument("--format", choices=("litert", "openvino", "onnx"), required=True)
    export.add_argument("--overwrite", action="store_true", help="replace DIR if it is not empty")
    export.set_defaults(func=cmd_export)

    doctor = sub.add_parser("doctor", help="check prerequisites (Java for Spark) and show the settings")
    doctor.set_defaults(func=cmd_doctor)

    review = sub.add_parser("feedback", help="review user corrections: list, accept (into raw), reject")
    review.add_argument("action", choices=("list", "accept", "reject"))
    review.add_argument("sha256", nargs="*", help="images to decide on, by sha256 (a prefix is enough)")
    review.add_argument("--all", action="store_true", help="decide on every pending image (of --species)")
    review.add_argument("--species", help="only images corrected to this label")
    review.set_defaults(func=cmd_feedback)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
