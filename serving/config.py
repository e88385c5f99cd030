"""The service's settings: the ``serving`` section of :func:`fish_platform.settings.load_settings`.

The service and the Dagster graph read one settings object, so they agree on the registry, the model
name and Redis by construction; this module only names the serving section and hides secrets in logs.
"""

from __future__ import annotations

from fish_platform.logs import redact_url
from fish_platform.settings import ServingSettings, load_settings

ServingConfig = ServingSettings
__all__ = ["ServingConfig", "load_serving_config", "redact_url"]


def load_serving_config() -> ServingSettings:
    return load_settings().serving

