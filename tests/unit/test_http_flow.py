"""serving.http.flow: reading resumes only when the last reason to pause is lifted."""

from __future__ import annotations

import asyncio

from serving.http import FlowControl, Pause


class RecordingTransport(asyncio.Transport):
    """Counts the pause/resume calls a real transport would get."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def test_reasons_stack_and_only_the_last_lift_resumes() -> None:
    transport = RecordingTransport()
    flow = FlowControl(transport)
    flow.pause_reading(Pause.PIPELINE)
    flow.pause_reading(Pause.UPSTREAM)
    flow.pause_reading(Pause.UPSTREAM)
    assert transport.calls == ["pause"] and flow.read_paused
    assert not flow.resume_reading(Pause.PIPELINE)
    assert not flow.resume_reading(Pause.PENDING)  # not a reason it was paused for
    assert flow.resume_reading(Pause.UPSTREAM)
    assert transport.calls == ["pause", "resume"] and not flow.read_paused
    assert not flow.resume_reading(Pause.UPSTREAM)  # nothing left to lift


def test_a_mask_lifts_several_reasons_at_once() -> None:
    transport = RecordingTransport()
    flow = FlowControl(transport)
    flow.pause_reading(Pause.PIPELINE)
    flow.pause_reading(Pause.REFUSED)
    assert flow.resume_reading(Pause.PIPELINE | Pause.REFUSED)
    assert "refused" not in repr(flow)


def test_a_closed_connection_leaves_its_transport_alone() -> None:
    transport = RecordingTransport()
    flow = FlowControl(transport)
    flow.close()
    flow.pause_reading(Pause.READER)
    assert flow.read_paused and not flow.resume_reading(Pause.READER) and transport.calls == []


async def test_drain_waits_for_resume_writing_or_close() -> None:
    flow = FlowControl(RecordingTransport())
    await flow.drain()  # not paused: returns at once
    flow.pause_writing()
    waiter = asyncio.ensure_future(flow.drain())
    await asyncio.sleep(0)
    assert not waiter.done()
    flow.resume_writing()
    await waiter
    flow.pause_writing()
    waiter = asyncio.ensure_future(flow.drain())
    await asyncio.sleep(0)
    flow.close()
    await waiter
