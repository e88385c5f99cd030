"""The challenger beside the champion: who answers a request, and the other model's answer in shadow.

Plain asyncio, no BentoML (the service wires it; docs/monitoring.md).

* **Routing**: :func:`challenger_answers` puts a client in the challenger's share of the traffic
  (``FISH_CHALLENGER_TRAFFIC_PERCENT``) by a hash of its key (the ``X-Client-ID`` header, else its
  address), so one client always meets the same model while the share stays put. With 0 (the
  default) the champion answers everyone.
* **Shadow**: :class:`Shadow` sends each uncached, answered image to the model that did *not* answer
  it, after the answer is ready and without the request waiting for it: :meth:`Shadow.submit` only
  schedules a task. The request path pays that scheduling (microseconds); the shadow call competes
  with requests for CPU only. Work beyond ``max_pending`` images in flight is dropped and counted, so
  an overloaded challenger never builds a backlog behind the champion.
* **Agreement**: :class:`Agreement` keeps the top-1 agreement of the last answers compared (the
  ``fish_challenger_agreement`` gauge; the counters behind it aggregate across workers and pods).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fish_platform.logs import log_event

log = logging.getLogger("serving.shadow")

AGREEMENT_WINDOW = 500  # answers the rolling agreement gauge covers


def client_bucket(client_key: str) -> float:
    """A stable place in [0, 100) for one client key (the same on every pod and every restart)."""
    digest = hashlib.sha256(client_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def challenger_answers(client_key: str | None, percent: float) -> bool:
    """Whether the challenger answers this client (sticky: a function of the key alone)."""
    if percent <= 0.0:
        return False
    if percent >= 100.0:
        return True
    return bool(client_key) and client_bucket(str(client_key)) < percent


def top1(answer: Mapping[str, Any]) -> str | None:
    top = answer.get("top3") or []
    return str(top[0]["species"]) if top else None


@dataclass
class ShadowItem:
    """One answered image waiting for the other model's answer."""

    request_id: str
    sha256: str
    array: np.ndarray  # the model input the answering model saw
    answered: Mapping[str, Any]  # the answer the client got
    width: int | None = None
    height: int | None = None


ShadowCall = Callable[[list[np.ndarray]], Awaitable[Sequence[Any]]]
ShadowRecord = Callable[[list[ShadowItem], Sequence[Any], float], None]


class Shadow:
    """Answers in shadow, off the request path (see the module docstring).

    ``on_drop(n_images, reason)`` is told of every image not answered in shadow: ``backlog`` (over
    ``max_pending`` in flight) or ``failed`` (the call raised).
    """

    def __init__(
        self, max_pending: int, on_drop: Callable[[int, str], None] = lambda n, reason: None
    ) -> None:
        self.max_pending = max(0, max_pending)
        self.on_drop = on_drop
        self.pending = 0  # images in flight
        self._tasks: set[asyncio.Task] = set()

    def submit(self, items: list[ShadowItem], call: ShadowCall, record: ShadowRecord) -> bool:
        """Schedule ``call`` on the items' arrays and ``record(items, answers, latency_ms)`` after it.

        Returns at once; False when the items were dropped because too many are in flight.
        """
        if not items:
            return True
        if self.pending + len(items) > self.max_pending:
            self.on_drop(len(items), "backlog")
            return False
        self.pending += len(items)
        task = asyncio.get_running_loop().create_task(self._run(items, call, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, items: list[ShadowItem], call: ShadowCall, record: ShadowRecord) -> None:
        started = time.perf_counter()
        try:
            answers = await call([item.array for item in items])
        except Exception as exc:  # noqa: BLE001 - the shadow never fails anything but itself
            self.on_drop(len(items), "failed")
            log_event(log, "shadow answer failed", logging.WARNING, images=len(items), error=repr(exc))
            return
        finally:
            self.pending -= len(items)
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        try:
            record(items, answers, latency_ms)
        except Exception as exc:  # noqa: BLE001
            log_event(log, "shadow answer not recorded", logging.WARNING, error=repr(exc))

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) for the answers in flight, e.g. before the log's last flush."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


class Agreement:
    """Top-1 agreement of champion and challenger over the last ``window`` compared answers."""

    def __init__(self, window: int = AGREEMENT_WINDOW) -> None:
        self._last: deque[bool] = deque(maxlen=window)

    def add(self, agree: bool) -> float:
        self._last.append(bool(agree))
        return self.rate

    @property
    def rate(self) -> float:
        return sum(self._last) / len(self._last) if self._last else float("nan")

    def reset(self) -> None:
        """Forget the window (the champion or the challenger changed: old pairs compared other models)."""
        self._last.clear()
