"""MLflow registry policy: champion and challenger, promotion and rollback.

State lives in the registry itself, never in a file of ours: the alias ``production`` names the
champion, the alias ``challenger`` (optional) the version shadowing it in serving, and tags on each
version record why it was or was not promoted and which version it replaced, so ``rollback`` can
walk back without any other bookkeeping. Stages are deprecated in
MLflow 3 and not used. Nothing here imports Dagster.

A challenger is compared with the champion on the *same* test split: the champion's macro-F1 is
taken from a tag only if it was recorded for the identical split fingerprint (sha256 over the
split's image hashes); otherwise the champion is evaluated on the current split and the result
is recorded for next time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from fish_platform.contract import (
    CHALLENGER_ALIAS,
    PRODUCTION_ALIAS,
    mlflow_error_is,
    model_alias_uri,
    model_version_uri,
)
from fish_platform.ml.config import PromotionConfig

log = logging.getLogger(__name__)

DEFAULT_MARGIN = PromotionConfig().margin
DEFAULT_CHALLENGER_MARGIN = PromotionConfig().challenger_margin

# promoted | kept_champion | manual | challenger_report | rolled_back | restored
TAG_DECISION = "fish.promotion.decision"
TAG_REASON = "fish.promotion.reason"
TAG_CHALLENGER_F1 = "fish.promotion.challenger_macro_f1"
TAG_CHAMPION_F1 = "fish.promotion.champion_macro_f1"
TAG_CHAMPION_VERSION = "fish.promotion.champion_version"  # the champion when this version was reviewed
TAG_PREVIOUS = "fish.promotion.previous_champion"  # the version the alias pointed to before this one
TAG_PROMOTED_AT = "fish.promotion.promoted_at"
TAG_ROLLED_BACK_AT = "fish.promotion.rolled_back_at"
TAG_FINGERPRINT = "fish.eval.test_fingerprint"
TAG_MACRO_F1 = "fish.eval.macro_f1"
TAG_RUN_ID = "fish.mlflow_run_id"
TAG_CHALLENGER_REASON = "fish.challenger.reason"  # why this version became the @challenger
TAG_CHALLENGER_SET_AT = "fish.challenger.set_at"


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked (no champion, nothing to roll back to...)."""


@dataclass(frozen=True)
class Decision:
    """The outcome of reviewing a challenger, as recorded in tags and asset metadata."""

    promote: bool
    reason: str
    challenger_version: str
    challenger_f1: float
    champion_version: str | None
    champion_f1: float | None
    champion_f1_source: str  # "none", "recorded" (same split fingerprint) or "evaluated" or "failed"
    margin: float

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "kept_champion"


@dataclass(frozen=True)
class Review:
    """A registered challenger, the decision about it, and where the alias points afterwards."""

    model_name: str
    version: str
    decision: Decision
    production_version: str | None
    challenger_version: str | None = None  # where @challenger points afterwards

    @property
    def production_uri(self) -> str:
        return model_alias_uri(self.model_name)


def f1_tag(fingerprint: str) -> str:
    """Tag holding a version's macro-F1 on one particular test split."""
    return f"{TAG_MACRO_F1}.{fingerprint[:16]}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def get_champion(client: Any, model_name: str, alias: str = PRODUCTION_ALIAS) -> ModelVersion | None:
    """The version the alias points to, or None when the model or the alias does not exist yet.

    Note that ``ModelVersion.version`` may be an int or a str depending on the store; the functions
    here take and return versions as ``str``.
    """
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as exc:
        if mlflow_error_is(exc, "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise
    version = registered.aliases.get(alias)
    return client.get_model_version(model_name, version) if version is not None else None


def register_challenger(
    client: Any,
    model_name: str,
    model_uri: str,
    *,
    run_id: str,
    macro_f1: float,
    fingerprint: str,
    model_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> ModelVersion:
    """Register an evaluated model as a new version carrying its test score and split fingerprint.

    Called only after training and evaluation succeeded, so a failed run never leaves a version.
    """
    try:
        client.create_registered_model(model_name, description="Fish species classifier (fish-platform).")
    except MlflowException as exc:
        if not mlflow_error_is(exc, "RESOURCE_ALREADY_EXISTS"):
            raise
    version_tags = {
        TAG_RUN_ID: run_id,
        TAG_FINGERPRINT: fingerprint,
        TAG_MACRO_F1: f"{macro_f1:.6f}",
        f1_tag(fingerprint): f"{macro_f1:.6f}",
        **(tags or {}),
    }
    return client.create_model_version(
        model_name, source=model_uri, run_id=run_id, tags=version_tags, model_id=model_id
    )


def champion_f1_on_split(
    client: Any,
    model_name: str,
    champion: ModelVersion,
    fingerprint: str,
    evaluate: Callable[[str], float],
) -> tuple[float, str]:
    """The champion's macro-F1 on the split ``fingerprint``: recorded if known, else evaluated now.

    ``evaluate(model_uri) -> macro_f1`` scores a model on the current split (see
    :func:`fish_platform.ml.evaluate.macro_f1_on_split`). A fresh score is stored as a tag on the
    champion so the next challenger on the same split does not pay for it again.
    """
    recorded = champion.tags.get(f1_tag(fingerprint))
    if recorded is not None:
        return float(recorded), "recorded"
    score = float(evaluate(model_version_uri(model_name, champion.version)))
    client.set_model_version_tag(model_name, str(champion.version), f1_tag(fingerprint), f"{score:.6f}")
    return score, "evaluated"


def decide(
    challenger_version: str,
    challenger_f1: float,
    champion_version: str | None,
    champion_f1: float | None,
    margin: float = DEFAULT_MARGIN,
    champion_f1_source: str = "none",
) -> Decision:
    """Promote when there is no champion, or the challenger beats it by at least ``margin`` macro-F1."""
    args = dict(
        challenger_version=challenger_version,
        challenger_f1=challenger_f1,
        champion_version=champion_version,
        champion_f1=champion_f1,
        champion_f1_source=champion_f1_source,
        margin=margin,
    )
    if champion_version is None:
        return Decision(True, "no champion yet", **args)
    if champion_f1 is None:
        reason = f"champion v{champion_version} could not be scored on this test split; promote manually"
        return Decision(False, reason, **args)
    gain = challenger_f1 - champion_f1
    comparison = (
        f"macro-F1 {challenger_f1:.4f} vs champion v{champion_version} {champion_f1:.4f} "
        f"({champion_f1_source}), gain {gain:+.4f}, margin {margin:.4f}"
    )
    if gain >= margin:
        return Decision(True, f"beats the champion: {comparison}", **args)
    return Decision(False, f"does not beat the champion by the margin: {comparison}", **args)


def review_challenger(
    client: Any,
    model_name: str,
    version: str,
    *,
    challenger_f1: float,
    fingerprint: str,
    evaluate_champion: Callable[[str], float],
    margin: float = DEFAULT_MARGIN,
    challenger_margin: float = DEFAULT_CHALLENGER_MARGIN,
) -> Decision:
    """Compare a registered challenger with the champion, record the decision, promote if it wins.

    The decision is always written to the challenger's tags (``fish.promotion.*``); ``production``
    moves only on promotion. A near miss (see :func:`near_miss`) becomes the ``@challenger``
    instead, so live traffic can settle what the offline gate could not.
    """
    version = str(version)
    champion = get_champion(client, model_name)
    champion_version, champion_f1, source = None, None, "none"
    if champion is not None and str(champion.version) == version:
        raise RegistryError(f"{model_name} v{version} is already the champion; register a new challenger")
    if champion is not None:
        champion_version = str(champion.version)
        try:
            champion_f1, source = champion_f1_on_split(
                client, model_name, champion, fingerprint, evaluate_champion
            )
        except Exception as exc:  # a broken champion must not crash the run, nor be replaced silently
            log.warning("could not evaluate champion v%s: %s", champion.version, exc)
            source = "failed"
    decision = decide(version, challenger_f1, champion_version, champion_f1, margin, source)
    tags = {
        TAG_DECISION: decision.label,
        TAG_REASON: decision.reason[:4000],
        TAG_CHALLENGER_F1: f"{challenger_f1:.6f}",
        TAG_CHAMPION_VERSION: champion_version or "",
        TAG_CHAMPION_F1: "" if champion_f1 is None else f"{champion_f1:.6f}",
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    if decision.promote:
        promote(client, model_name, version, decision.reason, decision="promoted")
    elif near_miss(decision, challenger_margin):
        reason = f"missed the promotion gate by at most {challenger_margin:.4f}: {decision.reason}"
        set_challenger(client, model_name, version, reason)
    return decision


def register_and_review(
    client: Any,
    model_name: str,
    model_uri: str,
    *,
    run_id: str,
    model_id: str | None,
    macro_f1: float,
    fingerprint: str,
    evaluate_champion: Callable[[str], float],
    margin: float = DEFAULT_MARGIN,
    challenger_margin: float = DEFAULT_CHALLENGER_MARGIN,
    tags: dict[str, str] | None = None,
) -> Review:
    """The promotion step: register the evaluated model, review it against the champion, report."""
    registered = register_challenger(
        client, model_name, model_uri, run_id=run_id, macro_f1=macro_f1, fingerprint=fingerprint,
        model_id=model_id, tags=tags,
    )
    version = str(registered.version)
    decision = review_challenger(
        client, model_name, version, challenger_f1=macro_f1, fingerprint=fingerprint,
        evaluate_champion=evaluate_champion, margin=margin, challenger_margin=challenger_margin,
    )
    champion = get_champion(client, model_name)
    shadow = get_champion(client, model_name, CHALLENGER_ALIAS)
    return Review(
        model_name,
        version,
        decision,
        str(champion.version) if champion is not None else None,
        str(shadow.version) if shadow is not None else None,
    )


def promote(
    client: Any,
    model_name: str,
    version: str | int,
    reason: str,
    *,
    decision: str = "manual",
    alias: str = PRODUCTION_ALIAS,
) -> str | None:
    """Point ``alias`` at ``version`` and record which version it replaced; returns that version.

    Used by the automatic review (``decision="promoted"``), by ``fish-platform promote VERSION``
    (``decision="manual"``) and ``promote --from-report`` (``decision="challenger_report"``).
    Promoting the current champion again changes nothing. A promoted ``@challenger`` stops being
    one: a version never shadows itself.
    """
    version = str(version)
    client.get_model_version(model_name, version)  # raises if the version does not exist
    champion = get_champion(client, model_name, alias)
    previous = str(champion.version) if champion is not None else None
    if previous == version:
        return previous
    for key, value in {
        TAG_PREVIOUS: previous or "",
        TAG_PROMOTED_AT: _now(),
        TAG_DECISION: decision,
        TAG_REASON: reason[:4000],
    }.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, alias, version)
    shadow = get_champion(client, model_name, CHALLENGER_ALIAS) if alias == PRODUCTION_ALIAS else None
    if shadow is not None and str(shadow.version) == version:
        client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)
    log.info("%s@%s -> v%s (was v%s): %s", model_name, alias, version, previous, reason)
    return previous


def near_miss(decision: Decision, challenger_margin: float) -> bool:
    """Whether a kept-champion decision missed the gate by at most ``challenger_margin`` macro-F1.

    The gate is ``gain >= margin``; a shortfall ``margin - gain`` in ``(0, challenger_margin]`` is
    too close for the offline test split to call, so the version is worth shadowing. Needs a
    scored champion (no score: nothing to compare), and ``challenger_margin > 0``.
    """
    if decision.promote or decision.champion_f1 is None or challenger_margin <= 0:
        return False
    shortfall = decision.margin - (decision.challenger_f1 - decision.champion_f1)
    return shortfall <= challenger_margin + 1e-12


def set_challenger(client: Any, model_name: str, version: str | int, reason: str) -> str | None:
    """Point ``@challenger`` at ``version`` (never the champion); returns the version it replaced."""
    version = str(version)
    client.get_model_version(model_name, version)  # raises if the version does not exist
    champion = get_champion(client, model_name)
    if champion is not None and str(champion.version) == version:
        raise RegistryError(
            f"{model_name} v{version} is the @{PRODUCTION_ALIAS} version; it cannot shadow itself"
        )
    current = get_champion(client, model_name, CHALLENGER_ALIAS)
    client.set_model_version_tag(model_name, version, TAG_CHALLENGER_REASON, reason[:4000])
    client.set_model_version_tag(model_name, version, TAG_CHALLENGER_SET_AT, _now())
    client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, version)
    log.info("%s@%s -> v%s: %s", model_name, CHALLENGER_ALIAS, version, reason)
    return str(current.version) if current is not None else None


def clear_challenger(client: Any, model_name: str) -> str:
    """Remove ``@challenger`` (serving stops shadowing); returns the version it pointed at."""
    current = get_champion(client, model_name, CHALLENGER_ALIAS)
    if current is None:
        raise RegistryError(f"{model_name} has no @{CHALLENGER_ALIAS} version to clear")
    client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)
    return str(current.version)


def rollback(
    client: Any, model_name: str, reason: str = "manual rollback", *, alias: str = PRODUCTION_ALIAS
) -> str:
    """Move ``alias`` back to the champion the current one replaced; returns the version now served.

    Follows the ``fish.promotion.previous_champion`` tag of the current champion, so repeated
    rollbacks walk further back. The rolled-back version is tagged ``rolled_back``.
    Raises :class:`RegistryError` when there is no champion or no earlier one to go back to.
    """
    current = get_champion(client, model_name, alias)
    if current is None:
        raise RegistryError(f"{model_name} has no @{alias} version to roll back")
    previous = current.tags.get(TAG_PREVIOUS, "")
    if not previous:
        raise RegistryError(
            f"{model_name} v{current.version} replaced no earlier champion; nothing to roll back to"
        )
    try:
        client.get_model_version(model_name, previous)
    except MlflowException as exc:
        raise RegistryError(f"previous champion v{previous} of {model_name} no longer exists") from exc
    client.set_registered_model_alias(model_name, alias, previous)
    stamp = _now()
    rolled_back = {TAG_DECISION: "rolled_back", TAG_REASON: reason[:4000], TAG_ROLLED_BACK_AT: stamp}
    for key, value in rolled_back.items():
        client.set_model_version_tag(model_name, str(current.version), key, value)
    client.set_model_version_tag(model_name, previous, "fish.promotion.restored_at", stamp)
    log.info("%s@%s rolled back v%s -> v%s: %s", model_name, alias, current.version, previous, reason)
    return previous
