"""Fuzz the live service against its own OpenAPI document (``/docs.json``) with every schemathesis check.

Every operation (``/predict``, ``/predict_batch``, ``/explain``, ``/feedback``, the probes), positive
and negative cases, and all of schemathesis' checks: no 5xx, every status code documented, every
body (errors included) matching its documented schema, content types and headers as documented,
invalid requests rejected. Uses schemathesis' Hypothesis strategies directly (its lazy pytest fixture
loader does not work with the pytest version pinned here).

One allowance, in the configuration below: a schema-valid upload is any bytes, and bytes that are
not an image are rightly a 400 (``not_an_image``) - JSON Schema cannot say "a decodable photo" - so
400 counts as an accepted answer to positive cases; and 413 (more files than ``maxItems``) as a
rejection of negative ones.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
EXAMPLES_PER_MODE = 10
CONFIG = {
    "checks": {
        "enabled": True,
        "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404"]},
        # too many files is a 413 (as an oversize body), a rejection like schemathesis' default list
        "negative_data_rejection": {
            "expected-statuses": [
                "400",
                "401",
                "403",
                "404",
                "405",
                "406",
                "409",
                "413",
                "415",
                "422",
                "428",
                "429",
            ]
        },
    }
}


def operations(service):
    config = SchemathesisConfig.from_dict(CONFIG)
    schema = schemathesis.openapi.from_url(f"{service.url}/docs.json", config=config)
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_lists_the_apis(service):
    paths = {(op.method.upper(), op.path) for op in operations(service)}
    expected = {("POST", "/predict"), ("POST", "/predict_batch"), ("POST", "/explain"), ("GET", "/readyz")}
    assert expected <= paths


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_all_checks_pass_on_every_operation(service, mode):
    seen: list[str] = []
    for operation in operations(service):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_MODE,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            response = case.call_and_validate(base_url=service.url, timeout=60)  # every check
            seen.append(f"{case.method} {case.path} -> {response.status_code}")

        try:
            fuzz()
        except Unsatisfiable:  # nothing to break in, e.g. a negative case for a GET without parameters
            continue
    for route in ("/predict ", "/predict_batch ", "/explain "):
        assert any(line.startswith(f"POST {route}") for line in seen), seen
