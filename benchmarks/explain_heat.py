"""Is a registered version's heat map on the fish? Class activation maps on generated photos whose outline
the generator knows.

    .venv/bin/python benchmarks/explain_heat.py --tracking-uri sqlite:///fish-data/mlflow/mlflow.db

For each species of the version that the generator draws (``fish_platform.data.synthetic``), it renders
``--per-species`` new photos at the model's input size (seeds the dataset did not use), computes the map
of the true species as ``/explain`` does (:mod:`fish_platform.ml.explain`: ReLU of the feature map times
the dense head's weights, scaled to [0, 1], upsampled to the photo) and compares the mean heat inside the
fish's outline with the mean outside. Prints the mean ratio, its median, and the share of photos hotter
inside; JSON goes to ``benchmarks/results/`` unless ``--output`` says otherwise.
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


def main() -> None:
    import mlflow
    from mlflow import MlflowClient

    from fish_platform.data.synthetic import SPECIES_STYLES, render_image_with_mask
    from fish_platform.ml.explain import cam_model, class_activation_map, head_weights, upsample
    from fish_platform.ml.export import load_logged_keras

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model-name", default="fish-classifier")
    parser.add_argument("--alias", default="production")
    parser.add_argument("--per-species", type=int, default=20)
    parser.add_argument("--seed", type=int, default=10_000, help="far from the seeds sample-data uses")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_registry_uri(args.tracking_uri)
    version = MlflowClient(args.tracking_uri).get_model_version_by_alias(args.model_name, args.alias)
    model, meta = load_logged_keras(f"models:/{args.model_name}/{version.version}")
    size, labels = int(meta["image_size"]), list(meta["labels"])
    styles = {style.name.replace(" ", "_"): style for style in SPECIES_STYLES}
    styles.update({style.name: style for style in SPECIES_STYLES})
    drawn = [label for label in labels if label in styles]
    if not drawn:
        raise SystemExit(f"none of the version's species {labels} is drawn by the generator")
    cam = cam_model(model)
    kernel, _ = head_weights(model)
    rng = np.random.default_rng(args.seed)
    ratios, correct = [], 0
    for label in drawn:
        for _ in range(args.per_species):
            image, mask = render_image_with_mask(styles[label], rng, (size, size))
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)[None]
            probabilities, feature_map = cam(pixels, training=False)
            correct += int(np.argmax(probabilities[0]) == labels.index(label))
            heat = upsample(
                class_activation_map(np.asarray(feature_map[0]), kernel, labels.index(label)), mask.shape
            )
            inside, outside = heat[mask].mean(), heat[~mask].mean()
            ratios.append(float(inside / outside) if outside > 0 else float("inf"))
    ratios_arr = np.array(ratios)
    finite = ratios_arr[np.isfinite(ratios_arr)]
    summary = {
        "version": str(version.version),
        "image_size": size,
        "species": drawn,
        "photos": len(ratios),
        "top1_accuracy": round(correct / len(ratios), 3),
        "mean_ratio_inside_outside": round(float(finite.mean()), 2) if finite.size else None,
        "median_ratio": round(float(np.median(ratios_arr)), 2),
        "share_hotter_inside": round(float((ratios_arr > 1).mean()), 3),
    }
    print(json.dumps(summary, indent=2))
    output = args.output or RESULTS / f"explain-heat-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
