"""How well a registered version tells its species from fish it never saw and from non-fish images.

    .venv/bin/python benchmarks/open_set.py --tracking-uri sqlite:///DIR/mlflow.db \\
        --dataset DIR/dataset/versions/<id> --held-out /path/species_a /path/species_b ...

Train the version on all species but a few (point ``FISH_RAW_URI`` at a folder that lacks them), then
run this with those species' folders as ``--held-out``. Knowns are the version's own test split (images
of trained species it has not trained on); unknowns are every image of the held-out species, and
separately generated non-fish images (plain colours, noise, textures:
:func:`fish_platform.ml.behaviour.not_a_fish_images`). For each open-set score
(:data:`fish_platform.ml.calibration.SCORE_METHODS`, with the version's fitted temperature and its
stored feature space: the head, and the training subspace for ``vim``) it reports AUROC and the
false-positive rate at 95% true-positive rate, and the rates at the threshold the version stores for
that score (chosen on the validation split). JSON goes to ``benchmarks/results/`` unless
``--output`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def load_version(tracking_uri: str, model_name: str, alias: str, version: str | None):
    """(the logged classifier, calibration record or None, version) of the registered model."""
    import mlflow
    from mlflow import MlflowClient

    from fish_platform.ml.packaging import load_classifier
    from fish_platform.ml.trust import load_calibration

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    found = (
        client.get_model_version(model_name, version)
        if version
        else client.get_model_version_by_alias(model_name, alias)
    )
    model = load_classifier(f"models:/{model_name}/{found.version}")
    try:
        record = load_calibration(found.run_id, tracking_uri)
    except Exception as exc:  # an older version without a calibration record: temperature 1
        print(f"no calibration record ({type(exc).__name__}); temperature 1, no stored threshold")
        record = None
    return model, record, str(found.version)


def folder_images(folders: list[Path], size: int) -> np.ndarray:
    from fish_platform.imaging import to_model_input

    paths = sorted(p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images under {', '.join(map(str, folders))}")
    return np.stack([to_model_input(p.read_bytes(), size) for p in paths])


def split_images(dataset: str, split: str, size: int) -> np.ndarray:
    from fish_platform.imaging import to_model_input
    from fish_platform.ml.input import count_rows, first_images

    return np.stack(
        [to_model_input(data, size) for data in first_images(dataset, split, count_rows(dataset, split))]
    )


def main() -> None:
    from fish_platform.ml.behaviour import not_a_fish_images
    from fish_platform.ml.calibration import SCORE_METHODS, open_set_report, open_set_scores
    from fish_platform.ml.runtimes import probabilities_and_embeddings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model-name", default="fish-classifier")
    parser.add_argument("--alias", default="production")
    parser.add_argument("--version", help="a version number instead of the alias")
    parser.add_argument("--dataset", required=True, help="the dataset version the model was trained on")
    parser.add_argument(
        "--held-out", type=Path, nargs="+", required=True, help="folders of untrained species"
    )
    parser.add_argument("--not-a-fish", type=int, default=200, help="generated non-fish images")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    model, record, version = load_version(args.tracking_uri, args.model_name, args.alias, args.version)
    size, labels = int(model.image_size), list(model.labels)
    held_out = [folder.name for folder in args.held_out]
    trained_on_held_out = sorted(set(held_out) & set(labels))
    if trained_on_held_out:
        raise SystemExit(f"the version was trained on {trained_on_held_out}: they are not unknown to it")
    temperature = record.temperature if record else 1.0
    sets = {
        "known (test split)": split_images(args.dataset, "test", size),
        "held-out species": folder_images(args.held_out, size),
        "not a fish": not_a_fish_images(size, args.not_a_fish, seed=0),
    }
    outputs = {name: probabilities_and_embeddings(model, images) for name, images in sets.items()}
    if record is None or record.space is None:  # an older version: fit the head-only space here
        from fish_platform.ml.calibration import FeatureSpace

        space = FeatureSpace(*model.head)
    else:
        space = record.space
    known_p, known_e = outputs["known (test split)"]
    rows = []
    for method in SCORE_METHODS:
        try:
            known = open_set_scores(known_p, method, temperature, embeddings=known_e, space=space)
        except ValueError as exc:  # vim without a stored subspace
            print(f"{method}: {exc}")
            continue
        stored = record.thresholds.get(method) if record else None
        if record is not None and method == record.score_method:
            stored = record.threshold
        for name in ("held-out species", "not a fish"):
            p, e = outputs[name]
            unknown = open_set_scores(p, method, temperature, embeddings=e, space=space)
            report = open_set_report(known, unknown, stored)
            served = record is not None and method == record.score_method
            rows.append(
                {"score": method, "unknowns": name, "stored": served, "thresholded": stored is not None,
                 **report.as_dict()}
            )  # fmt: skip
    setup = {
        "version": version,
        "labels": len(labels),
        "image_size": size,
        "temperature": temperature,
        "stored_score": record.score_method if record else None,
        "stored_threshold": record.threshold if record else None,
        "vim_dimension": space.dimension,
        "held_out": held_out,
        "images": {name: int(len(images)) for name, images in sets.items()},
        "test_accuracy": float((known_p.argmax(axis=1) == _test_labels(args.dataset)).mean()),
    }
    print(json.dumps(setup))
    print("\n| score | unknowns | AUROC | FPR at 95% TPR | at its stored threshold: TPR / FPR |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        name = f"{row['score']} (served)" if row["stored"] else row["score"]
        at = f"{row['tpr']:.3f} / {row['fpr']:.3f}" if row["thresholded"] else ""
        print(f"| {name} | {row['unknowns']} | {row['auroc']:.3f} | {row['fpr_at_95_tpr']:.3f} | {at} |")
    output = args.output or RESULTS / f"open-set-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    print(f"\nresults: {output}")


def _test_labels(dataset: str) -> np.ndarray:
    from fish_platform.ml.input import iter_rows

    return np.array([row["label"] for row in iter_rows(dataset, "test", ["label"])])


if __name__ == "__main__":
    main()
