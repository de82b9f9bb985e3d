"""The max-score picker: highest wins, ties broken by a seedable random source."""

import random

import pytest

from serving.llmd.scheduler import MaxScorePicker, NoPods


def test_highest_score_wins():
    assert MaxScorePicker(random.Random(0)).pick({"a": 0.2, "b": 0.9, "c": 0.5}) == "b"


def test_ties_are_random_and_reproducible():
    scores = {"a": 1.0, "b": 1.0, "c": 0.1}
    first = [MaxScorePicker(random.Random(7)).pick(scores) for _ in range(1)]
    picker = MaxScorePicker(random.Random(7))
    seq = [picker.pick(scores) for _ in range(200)]
    assert set(seq) == {"a", "b"}
    assert seq[0] == first[0]
    again = MaxScorePicker(random.Random(7))
    assert [again.pick(scores) for _ in range(200)] == seq


def test_empty_scores_raise_no_pods():
    with pytest.raises(NoPods):
        MaxScorePicker().pick({})
