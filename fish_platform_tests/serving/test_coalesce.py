"""serving.coalesce: concurrent model calls merged into fewer, with no timer and no mixed-up answers."""

import asyncio

import pytest

from serving.coalesce import Coalescer


class GatedModel:
    """A stand-in for the model service whose calls finish only when the test opens the gate."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gates: list[asyncio.Event] = []
        self.fail_on: set[int] = set()  # call numbers that raise

    async def send(self, items: list[int]) -> list[str]:
        number = len(self.calls)
        self.calls.append(list(items))
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if number in self.fail_on:
            raise ConnectionError(f"call {number} failed")
        return [f"answer-{item}" for item in items]

    async def release(self, number: int) -> None:
        while len(self.gates) <= number:
            await asyncio.sleep(0)
        self.gates[number].set()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_lone_request_is_sent_at_once_and_alone():
    async def main() -> None:
        model = GatedModel()
        coalescer = Coalescer(model.send, max_in_flight=2, max_items=8)
        task = asyncio.create_task(coalescer.submit([7]))
        await settle()
        assert model.calls == [[7]]  # sent before anything else happened: no batching window
        await model.release(0)
        assert await task == ["answer-7"]

    asyncio.run(main())


def test_requests_arriving_during_a_call_share_the_next_one_and_get_their_own_answers():
    async def main() -> None:
        model = GatedModel()
        coalescer = Coalescer(model.send, max_in_flight=2, max_items=8)
        first = asyncio.create_task(coalescer.submit([0]))
        await settle()
        later = [asyncio.create_task(coalescer.submit([n, n + 100])) for n in (1, 2, 3)]
        await settle()
        assert model.calls == [[0]]  # a partial group waits for the open call's answer
        await model.release(0)
        await settle()
        assert model.calls == [[0], [1, 101, 2, 102, 3, 103]]
        await model.release(1)
        assert await first == ["answer-0"]
        assert [await t for t in later] == [[f"answer-{n}", f"answer-{n + 100}"] for n in (1, 2, 3)]
        assert coalescer.calls == 2

    asyncio.run(main())


def test_a_full_group_does_not_wait_for_the_open_call():
    async def main() -> None:
        model = GatedModel()
        coalescer = Coalescer(model.send, max_in_flight=2, max_items=4)
        tasks = [asyncio.create_task(coalescer.submit([n])) for n in range(9)]
        await settle()
        # Call 0 took the first request; four more filled call 1, which went ahead of call 0's answer.
        # The remaining four fill a group too, but two calls are open already.
        assert model.calls == [[0], [1, 2, 3, 4]]
        await model.release(0)
        await settle()
        assert model.calls[2] == [5, 6, 7, 8]
        for number in (1, 2):
            await model.release(number)
        assert [await t for t in tasks] == [[f"answer-{n}"] for n in range(9)]
        assert max(len(call) for call in model.calls) <= 4

    asyncio.run(main())


def test_a_request_bigger_than_max_items_goes_alone_and_whole():
    async def main() -> None:
        model = GatedModel()
        coalescer = Coalescer(model.send, max_in_flight=1, max_items=3)
        small = asyncio.create_task(coalescer.submit([0]))
        await settle()
        big = asyncio.create_task(coalescer.submit([1, 2, 3, 4, 5]))
        after = asyncio.create_task(coalescer.submit([6]))
        await settle()
        await model.release(0)
        await settle()
        assert model.calls[1] == [1, 2, 3, 4, 5]
        await model.release(1)
        await model.release(2)
        assert await big == [f"answer-{n}" for n in (1, 2, 3, 4, 5)]
        assert await small == ["answer-0"] and await after == ["answer-6"]
        assert model.calls[2] == [6]

    asyncio.run(main())


def test_a_failed_call_fails_only_its_own_callers_and_the_next_call_still_runs():
    async def main() -> None:
        model = GatedModel()
        model.fail_on = {1}
        coalescer = Coalescer(model.send, max_in_flight=1, max_items=8)
        first = asyncio.create_task(coalescer.submit([0]))
        await settle()
        doomed = [asyncio.create_task(coalescer.submit([n])) for n in (1, 2)]
        await settle()
        await model.release(0)
        await settle()
        survivor = asyncio.create_task(coalescer.submit([3]))
        await model.release(1)
        await settle()
        await model.release(2)
        assert await first == ["answer-0"]
        for task in doomed:
            with pytest.raises(ConnectionError, match="call 1 failed"):
                await task
        assert await survivor == ["answer-3"]
        assert model.calls == [[0], [1, 2], [3]]

    asyncio.run(main())


def test_a_cancelled_caller_is_dropped_from_its_call_without_hurting_the_others():
    async def main() -> None:
        model = GatedModel()
        coalescer = Coalescer(model.send, max_in_flight=1, max_items=8)
        first = asyncio.create_task(coalescer.submit([0]))
        await settle()
        gone = asyncio.create_task(coalescer.submit([1]))
        kept = asyncio.create_task(coalescer.submit([2]))
        await settle()
        gone.cancel()  # the client went away while waiting
        await settle()
        await model.release(0)
        await settle()
        await model.release(1)
        assert await kept == ["answer-2"]
        assert await first == ["answer-0"]
        assert model.calls == [[0], [2]]
        assert gone.cancelled()

    asyncio.run(main())


def test_a_wrong_number_of_results_is_an_error_not_a_misrouted_answer():
    async def main() -> None:
        async def short(items: list[int]) -> list[str]:
            return ["only one"]

        coalescer = Coalescer(short, max_in_flight=1, max_items=8)
        with pytest.raises(RuntimeError, match="1 results for 2 items"):
            await coalescer.submit([1, 2])

    asyncio.run(main())


def test_an_empty_request_makes_no_call_and_bad_limits_are_refused():
    async def main() -> None:
        model = GatedModel()
        assert await Coalescer(model.send).submit([]) == []
        assert model.calls == []

    asyncio.run(main())
    with pytest.raises(ValueError):
        Coalescer(GatedModel().send, max_in_flight=0)
