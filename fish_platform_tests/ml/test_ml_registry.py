"""Champion/challenger policy against a real MLflow sqlite registry.

The registered models here are trivial pyfunc models: the policy only needs versions, tags and
aliases, and the champion's score on a new split comes through the ``evaluate_champion`` callback
(the real scorer is exercised by the end-to-end graph test).
"""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from fish_platform.registry import (
    DEFAULT_MARGIN,
    PRODUCTION_ALIAS,
    TAG_CHAMPION_F1,
    TAG_DECISION,
    TAG_PREVIOUS,
    TAG_REASON,
    Decision,
    RegistryError,
    decide,
    f1_tag,
    get_champion,
    promote,
    review_challenger,
    rollback,
)
from fish_platform_tests.mlflow_helpers import register_constant_model

pytestmark = pytest.mark.timeout(60)
NAME = "fish-registry-test"
SPLIT = "a" * 64
OTHER_SPLIT = "b" * 64


def _challenger(client: MlflowClient, f1: float, fingerprint: str = SPLIT) -> str:
    """Log a trivial model in its own run and register it with its test score."""
    return str(register_constant_model(client, NAME, macro_f1=f1, fingerprint=fingerprint).version)


def _never(uri: str) -> float:
    raise AssertionError(f"the champion should not be re-evaluated ({uri})")


@pytest.fixture
def client(mlflow_store) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_store.tracking_uri, registry_uri=mlflow_store.tracking_uri)


def _review(client: MlflowClient, version: str, f1: float, **kwargs) -> Decision:
    """Review ``version`` on SPLIT; the champion's score on SPLIT must be recorded already."""
    return review_challenger(
        client, NAME, version, challenger_f1=f1, fingerprint=SPLIT, evaluate_champion=_never, **kwargs
    )


@pytest.fixture
def first_champion(client) -> str:
    """The first champion: v1, macro-F1 0.70 on SPLIT, promoted because there was no champion."""
    v1 = _challenger(client, 0.70)
    _review(client, v1, 0.70)
    return v1


def test_policy_promotes_the_first_challenger(client):
    assert get_champion(client, NAME) is None

    v1 = _challenger(client, 0.70)
    first = _review(client, v1, 0.70)
    assert first.promote and first.reason == "no champion yet"
    assert str(get_champion(client, NAME).version) == v1


@pytest.mark.parametrize("f1", [0.60, 0.705], ids=["worse", "better-by-less-than-the-margin"])
def test_policy_keeps_the_champion_and_records_why(client, first_champion, f1):
    version = _challenger(client, f1)
    decision = _review(client, version, f1, margin=0.01)
    assert not decision.promote and decision.champion_f1_source == "recorded"
    tags = client.get_model_version(NAME, version).tags
    assert tags[TAG_DECISION] == "kept_champion" and "does not beat" in tags[TAG_REASON]
    assert float(tags[TAG_CHAMPION_F1]) == pytest.approx(0.70)
    assert str(get_champion(client, NAME).version) == first_champion


def test_policy_promotes_a_better_challenger_and_rolls_back(client, first_champion):
    v1 = first_champion
    v2 = _challenger(client, 0.80)
    better = _review(client, v2, 0.80)
    assert better.promote and "beats the champion" in better.reason
    champion = get_champion(client, NAME)
    assert str(champion.version) == v2 and champion.tags[TAG_PREVIOUS] == v1
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@{PRODUCTION_ALIAS}")
    assert served.metadata.run_id == champion.run_id

    assert rollback(client, NAME, "bad answers in production") == v1
    assert str(get_champion(client, NAME).version) == v1
    assert client.get_model_version(NAME, v2).tags[TAG_DECISION] == "rolled_back"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        rollback(client, NAME)


def test_champion_is_scored_on_the_current_split(client):
    v1 = _challenger(client, 0.90, fingerprint=OTHER_SPLIT)
    review_challenger(client, NAME, v1, challenger_f1=0.90, fingerprint=OTHER_SPLIT, evaluate_champion=_never)
    calls: list[str] = []

    def evaluate(uri: str) -> float:
        calls.append(uri)
        return 0.50  # the champion's 0.90 was on another split; on this one it scores 0.50

    v2 = _challenger(client, 0.60)
    decision = review_challenger(
        client, NAME, v2, challenger_f1=0.60, fingerprint=SPLIT, evaluate_champion=evaluate
    )
    assert calls == [f"models:/{NAME}/{v1}"]
    assert decision.promote and decision.champion_f1 == pytest.approx(0.50)
    assert decision.champion_f1_source == "evaluated"
    assert client.get_model_version(NAME, v1).tags[f1_tag(SPLIT)] == "0.500000"

    # The score is recorded per split: the next challenger on the same split reuses v2's tag.
    v3 = _challenger(client, 0.55)
    again = review_challenger(
        client, NAME, v3, challenger_f1=0.55, fingerprint=SPLIT, evaluate_champion=_never
    )
    assert not again.promote and again.champion_f1_source == "recorded"


def test_unscorable_champion_is_kept(client):
    v1 = _challenger(client, 0.90, fingerprint=OTHER_SPLIT)
    promote(client, NAME, v1, "first model")

    def broken(uri: str) -> float:
        raise OSError("artifacts gone")

    v2 = _challenger(client, 0.95)
    decision = review_challenger(
        client, NAME, v2, challenger_f1=0.95, fingerprint=SPLIT, evaluate_champion=broken
    )
    assert not decision.promote and decision.champion_f1_source == "failed"
    assert "promote manually" in decision.reason
    assert str(get_champion(client, NAME).version) == v1
    # The manual path the CLI uses.
    assert promote(client, NAME, v2, "checked by hand") == v1
    assert client.get_model_version(NAME, v2).tags[TAG_DECISION] == "manual"
    with pytest.raises(mlflow.exceptions.MlflowException):
        promote(client, NAME, "99", "no such version")


@pytest.mark.parametrize(
    ("challenger_f1", "champion_version", "champion_f1", "margin", "promoted"),
    [
        pytest.param(0.80, None, None, DEFAULT_MARGIN, True, id="no-champion"),
        pytest.param(0.811, "1", 0.80, 0.01, True, id="gain-above-margin"),
        pytest.param(0.805, "1", 0.80, 0.01, False, id="gain-below-margin"),
        pytest.param(0.80, "1", 0.80, 0.0, True, id="tie-with-zero-margin"),
    ],
)
def test_decide_is_pure_and_uses_the_margin(challenger_f1, champion_version, champion_f1, margin, promoted):
    assert decide("2", challenger_f1, champion_version, champion_f1, margin=margin).promote is promoted
