"""serving.shadow without BentoML: the sticky split, shadow calls off the request path, agreement."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fish_platform_tests.serving.test_inference import FakeClassifier
from serving.inference import AliasTarget, ModelHolder
from serving.shadow import Agreement, Shadow, ShadowItem, challenger_answers, client_bucket, top1


def test_the_split_is_sticky_and_takes_its_share_of_clients():
    keys = [f"id:client-{i}" for i in range(4000)]
    first = [challenger_answers(k, 25.0) for k in keys]
    assert first == [challenger_answers(k, 25.0) for k in keys]  # the same clients, every time
    assert 0.22 < sum(first) / len(keys) < 0.28
    # a larger share keeps everyone the smaller one had (raising the percentage moves no one back)
    assert all(challenger_answers(k, 60.0) for k, chosen in zip(keys, first, strict=True) if chosen)
    assert not any(challenger_answers(k, 0.0) for k in keys) and all(
        challenger_answers(k, 100.0) for k in keys
    )
    assert challenger_answers(None, 50.0) is False  # no key: the champion
    assert 0.0 <= client_bucket("x") < 100.0


def _item(i: int, species: str = "Trout") -> ShadowItem:
    return ShadowItem(f"r{i}", f"sha{i}", np.zeros((4, 4, 3), np.uint8), {"top3": [{"species": species}]})


def test_submit_returns_before_the_shadow_call_and_records_its_answers():
    async def scenario():
        gate = asyncio.Event()
        recorded: list = []

        async def call(arrays):
            await gate.wait()  # the shadow model is slow: the request must not wait for it
            return [{"top3": [{"species": "Trout"}]}] * len(arrays)

        shadow = Shadow(max_pending=8)
        assert shadow.submit(
            [_item(0), _item(1)], call, lambda items, answers, ms: recorded.append((items, answers))
        )
        assert shadow.pending == 2 and recorded == []  # scheduled, not run
        gate.set()
        await shadow.drain()
        return shadow, recorded

    shadow, recorded = asyncio.run(scenario())
    assert shadow.pending == 0
    ((items, answers),) = recorded
    assert [i.request_id for i in items] == ["r0", "r1"] and top1(answers[0]) == "Trout"


def test_work_beyond_the_backlog_and_failed_calls_are_dropped_and_counted():
    async def scenario():
        dropped: list = []
        gate = asyncio.Event()

        async def slow(arrays):
            await gate.wait()
            return [{}] * len(arrays)

        async def broken(arrays):
            raise ConnectionError("challenger process gone")

        shadow = Shadow(max_pending=3, on_drop=lambda n, reason: dropped.append((n, reason)))
        assert shadow.submit([_item(0), _item(1)], slow, lambda *a: None)
        assert not shadow.submit([_item(2), _item(3)], slow, lambda *a: None)  # 4 > 3 in flight
        assert shadow.submit([_item(4)], broken, lambda *a: None)
        gate.set()
        await shadow.drain()
        return shadow, dropped

    shadow, dropped = asyncio.run(scenario())
    assert dropped == [(2, "backlog"), (1, "failed")] and shadow.pending == 0


def test_agreement_is_the_rate_over_the_last_window():
    agreement = Agreement(window=4)
    assert np.isnan(agreement.rate)
    for agree in (True, False, True, True, True):  # the first True falls out of the window
        rate = agreement.add(agree)
    assert rate == pytest.approx(3 / 4)
    agreement.reset()
    assert np.isnan(agreement.rate)


def test_a_challenger_holder_unloads_when_its_alias_is_cleared():
    target: list[AliasTarget | None] = [AliasTarget("3")]
    unloaded: list = []
    holder = ModelHolder(
        "fish",
        resolve=lambda: target[0],
        load=lambda uri: FakeClassifier(["a", "b"], 8, 0),
        alias="challenger",
        unload_when_unset=True,
        on_unload=unloaded.append,
    )
    assert holder.refresh() and holder.info.version == "3"
    target[0] = None
    assert holder.refresh() and holder.current is None
    assert [info.version for info in unloaded] == ["3"]
    assert "challenger alias" in (holder.last_error or "")
    # the champion's holder (the default) keeps serving when its alias disappears
    champion_target: list[AliasTarget | None] = [AliasTarget("1")]
    champion = ModelHolder(
        "fish", resolve=lambda: champion_target[0], load=lambda uri: FakeClassifier(["a", "b"], 8, 1)
    )
    assert champion.refresh()
    champion_target[0] = None
    assert not champion.refresh() and champion.info.version == "1"
