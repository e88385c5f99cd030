"""Merge the images of concurrent requests into fewer calls to the model service.

Plain asyncio, no BentoML. Every uncached ``/predict`` needs the model. Made once per image, each
call is a full HTTP round trip to the model process (serialise, parse, route, dispatch, respond).
For B0 at 96 px on 2 cores that round trip cost the model process 1.3 ms of CPU per image, against
3-3.5 ms for the model itself (docs/serving.md).

:class:`Coalescer` keeps at most ``max_in_flight`` calls open. A request that finds no call open
is sent at once, alone, so a lone request waits for nothing. Requests that arrive while a call is
open queue up and leave together when it answers. A further call opens early only when the queue
holds a full call (``max_items``), so the model always has its next batch ready without splitting
it. No timer is involved: the calls grow only as much as the model is behind. The model service's
adaptive batching (BentoML) still decides the batches the model runs, across calls and API workers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future[list[R]] = field(repr=False)


class Coalescer(Generic[T, R]):
    """Send lists of items through ``send`` in as few calls as the model's pace allows.

    ``send`` takes a list of items and returns one result per item, in order. A failure of one call
    is raised to every caller whose items were in that call, and to no one else.
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_in_flight: int = 2,
        max_items: int = 64,
    ) -> None:
        if max_in_flight < 1 or max_items < 1:
            raise ValueError("max_in_flight and max_items must be at least 1")
        self._send = send
        self._max_in_flight = max_in_flight
        self._max_items = max_items
        self._waiting: deque[_Waiting[T, R]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls made so far (for tests and diagnostics)

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Results for ``items``, in order, from one call shared with whatever else was waiting."""
        if not items:
            return []
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(items, future))
        self._pump()
        return await future

    def _pump(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            # With a call already open, only a full call goes ahead of its answer: a partial one
            # gains nothing by waiting in the model's queue and would only split the next batch.
            if self._in_flight and sum(len(w.items) for w in self._waiting) < self._max_items:
                return
            group = self._take()
            self._in_flight += 1
            task = asyncio.create_task(self._run(group))
            self._tasks.add(task)  # keep a reference until it finishes
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting[T, R]]:
        """Whole requests, oldest first, up to ``max_items`` items (a bigger request goes alone)."""
        group = [self._waiting.popleft()]
        count = len(group[0].items)
        while self._waiting and count + len(self._waiting[0].items) <= self._max_items:
            count += len(self._waiting[0].items)
            group.append(self._waiting.popleft())
        return group

    async def _run(self, group: list[_Waiting[T, R]]) -> None:
        live = [w for w in group if not w.future.done()]  # a caller may have been cancelled
        try:
            if live:
                self.calls += 1
                flat = [item for waiting in live for item in waiting.items]
                results = list(await self._send(flat))
                if len(results) != len(flat):
                    raise RuntimeError(f"got {len(results)} results for {len(flat)} items")
                start = 0
                for waiting in live:
                    end = start + len(waiting.items)
                    if not waiting.future.done():
                        waiting.future.set_result(results[start:end])
                    start = end
        except asyncio.CancelledError:  # shutting down: the callers are cancelled too
            for waiting in live:
                waiting.future.cancel()
            raise
        except Exception as exc:  # every caller of this call learns why it failed
            for waiting in live:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._pump()
