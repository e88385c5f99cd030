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
    PRODUCTION_ALIAS,
    TAG_CHAMPION_F1,
    TAG_DECISION,
    TAG_PREVIOUS,
    TAG_REASON,
    RegistryError,
    decide,
    f1_tag,
    get_champion,
    promote,
    register_challenger,
    review_challenger,
    rollback,
)

pytestmark = pytest.mark.timeout(60)
NAME = "fish-registry-test"
SPLIT = "a" * 64
OTHER_SPLIT = "b" * 64


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _challenger(client: MlflowClient, f1: float, fingerprint: str = SPLIT) -> str:
    """Log a trivial model in its own run and register it with its test score."""
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    version = register_challenger(
        client,
        NAME,
        info.model_uri,
        run_id=run.info.run_id,
        macro_f1=f1,
        fingerprint=fingerprint,
        model_id=info.model_id,
    )
    return str(version.version)


def _never(uri: str) -> float:
    raise AssertionError(f"the champion should not be re-evaluated ({uri})")


@pytest.fixture
def client(mlflow_store) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_store.tracking_uri, registry_uri=mlflow_store.tracking_uri)


def test_policy_end_to_end(client):
    assert get_champion(client, NAME) is None

    v1 = _challenger(client, 0.70)
    first = review_challenger(
        client, NAME, v1, challenger_f1=0.70, fingerprint=SPLIT, evaluate_champion=_never
    )
    assert first.promote and first.reason == "no champion yet"
    assert str(get_champion(client, NAME).version) == v1

    # Worse, and better by less than the margin: the champion stays, and the reason is recorded.
    for f1 in (0.60, 0.705):
        version = _challenger(client, f1)
        decision = review_challenger(
            client, NAME, version, challenger_f1=f1, fingerprint=SPLIT, evaluate_champion=_never, margin=0.01
        )
        assert not decision.promote and decision.champion_f1_source == "recorded"
        tags = client.get_model_version(NAME, version).tags
        assert tags[TAG_DECISION] == "kept_champion" and "does not beat" in tags[TAG_REASON]
        assert float(tags[TAG_CHAMPION_F1]) == pytest.approx(0.70)
        assert str(get_champion(client, NAME).version) == v1

    v4 = _challenger(client, 0.80)
    better = review_challenger(
        client, NAME, v4, challenger_f1=0.80, fingerprint=SPLIT, evaluate_champion=_never
    )
    assert better.promote and "beats the champion" in better.reason
    champion = get_champion(client, NAME)
    assert str(champion.version) == v4 and champion.tags[TAG_PREVIOUS] == v1
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@{PRODUCTION_ALIAS}")
    assert served.metadata.run_id == champion.run_id

    assert rollback(client, NAME, "bad answers in production") == v1
    assert str(get_champion(client, NAME).version) == v1
    assert client.get_model_version(NAME, v4).tags[TAG_DECISION] == "rolled_back"
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


def test_decide_is_pure_and_uses_the_margin():
    assert decide("2", 0.80, None, None).promote
    assert decide("2", 0.811, "1", 0.80, margin=0.01).promote
    assert not decide("2", 0.805, "1", 0.80, margin=0.01).promote
    assert decide("2", 0.80, "1", 0.80, margin=0.0).promote
