"""serving.http.exchange: the proxied exchange's state machine and the replay buffer."""

from __future__ import annotations

import pytest

from serving.http import ExchangeState, ReplayBuffer, TransitionError, check_transition
from serving.http.exchange import TRANSITIONS

S = ExchangeState

HAPPY_PATHS = [
    [S.QUEUED, S.CONNECTING, S.SENT, S.HEAD_HELD, S.STREAMING, S.RESPONDED, S.FINISHED],  # sized body
    [S.QUEUED, S.CONNECTING, S.SENT, S.STREAMING, S.RESPONDED, S.FINISHED],  # a stream
    [S.QUEUED, S.CONNECTING, S.SENT, S.RESPONDED, S.FINISHED],  # 502 before any byte
    [S.QUEUED, S.CONNECTING, S.CONNECTING, S.SENT, S.CONNECTING, S.SENT, S.STREAMING, S.FINISHED],  # retries
    [S.QUEUED, S.RESPONDED, S.FINISHED],  # a local answer
    [S.QUEUED, S.CONNECTING, S.SENT, S.HEAD_HELD, S.RESPONDED, S.FINISHED],  # a held head replaced by 502
]


@pytest.mark.parametrize("path", HAPPY_PATHS)
def test_the_paths_the_gateway_takes_are_legal(path: list[ExchangeState]) -> None:
    state = path[0]
    for following in path[1:]:
        state = check_transition(state, following)
    assert state == path[-1]


@pytest.mark.parametrize(("old", "new"), [
    (S.STREAMING, S.CONNECTING),  # no retry once the client has bytes
    (S.STREAMING, S.HEAD_HELD),
    (S.HEAD_HELD, S.SENT),
    (S.FINISHED, S.ABORTED),
    (S.ABORTED, S.FINISHED),
    (S.RESPONDED, S.STREAMING),
    (S.QUEUED, S.SENT),  # a request is never sent without a connection
])
def test_illegal_moves_raise(old: ExchangeState, new: ExchangeState) -> None:
    with pytest.raises(TransitionError, match=f"from {old.name} to {new.name}"):
        check_transition(old, new)


def test_every_live_state_can_abort_and_the_end_states_are_final() -> None:
    for state in S:
        if state < S.FINISHED:
            assert (state, S.ABORTED) in TRANSITIONS
        else:
            assert not [pair for pair in TRANSITIONS if pair[0] == state]


def test_the_order_answers_has_the_client_seen_a_byte() -> None:
    committed = [state for state in S if S.STREAMING <= state < S.FINISHED]
    assert committed == [S.STREAMING, S.RESPONDED]


def test_replay_buffer_keeps_a_small_body_and_drops_a_large_one() -> None:
    small = ReplayBuffer(limit=10)
    small.add(b"12345")
    small.add(b"678")
    assert small.replayable and small.replay() == [b"12345", b"678"] and small.size == 8
    copy = small.replay()
    copy.append(b"x")
    assert small.replay() == [b"12345", b"678"]  # a copy: the redial may consume it
    small.add(b"abc")  # 11 > 10
    assert not small.replayable
    with pytest.raises(TransitionError):
        small.replay()
    begun = ReplayBuffer(limit=10)
    begun.drop()  # a response began
    begun.add(b"x")
    assert not begun.replayable
