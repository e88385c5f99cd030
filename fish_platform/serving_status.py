"""What the service serves, against what the registry says it should serve.

The service answers ``GET /readyz`` with the version it has loaded; the ``production`` alias says
which version it should have. Serving pods follow a promotion by polling the alias, so a short lag
is normal; a lag longer than ``max_lag_seconds`` after the promotion (or a service that does not
answer) means the deployment has not followed the registry.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

import httpx

from fish_platform.registry import TAG_PROMOTED_AT, get_champion


@dataclass(frozen=True)
class ServingStatus:
    url: str
    reachable: bool
    served_version: str | None  # None: not reachable, or no model loaded
    production_version: str | None  # what the alias points to
    promoted_at: float | None  # when the alias moved there (epoch seconds), from the version's tag
    detail: str = ""

    @property
    def in_sync(self) -> bool:
        return self.served_version is not None and self.served_version == self.production_version

    def lag_seconds(self, now: float) -> float:
        """How long the service has been behind the alias (0 when in sync)."""
        if self.in_sync or self.production_version is None:
            return 0.0
        return max(0.0, now - (self.promoted_at or now))

    def follows(self, max_lag_seconds: float, now: float) -> bool:
        """In sync, or behind for no longer than a promotion takes to reach every pod."""
        if self.production_version is None:
            return True  # nothing promoted yet: nothing to follow
        return self.in_sync or (self.reachable and self.lag_seconds(now) <= max_lag_seconds)


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def read_serving_status(url: str, client, model_name: str, timeout: float = 5.0) -> ServingStatus:
    """Ask the service (``GET /readyz``) and the registry (the alias), and put the answers side by side."""
    champion = get_champion(client, model_name)
    production = str(champion.version) if champion is not None else None
    promoted_at = None
    if champion is not None:  # an alias moved by hand has no tag: its creation time bounds the lag from above
        promoted_at = _epoch(champion.tags.get(TAG_PROMOTED_AT)) or champion.creation_timestamp / 1000
    try:
        answer = httpx.get(f"{url.rstrip('/')}/readyz", timeout=timeout)
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    except (httpx.HTTPError, ValueError) as exc:
        return ServingStatus(url, False, None, production, promoted_at, f"{type(exc).__name__}: {exc}")
    served = body.get("model_version")
    served = str(served) if served is not None else None
    detail = body.get("reason", "") if answer.status_code != 200 else ""
    return ServingStatus(url, True, served, production, promoted_at, detail)
