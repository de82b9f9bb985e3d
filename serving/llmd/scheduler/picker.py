"""Picker: turn summed scores into one pod. Max score; ties broken at random so equal pods share load."""

from __future__ import annotations

import random
from typing import Protocol

from .types import NoPods


class Picker(Protocol):
    name: str

    def pick(self, scores: dict[str, float]) -> str: ...


class MaxScorePicker:
    """The highest score wins; pods within ``tolerance`` of it tie and one is chosen by ``rng``.

    A seeded ``random.Random`` makes decisions reproducible in tests and simulations.
    """

    name = "max-score"

    def __init__(self, rng: random.Random | None = None, tolerance: float = 1e-9) -> None:
        self.rng = rng or random.Random()
        self.tolerance = tolerance

    def pick(self, scores: dict[str, float]) -> str:
        if not scores:
            raise NoPods("no candidate pods to pick from")
        best = max(scores.values())
        tied = [name for name, value in scores.items() if value >= best - self.tolerance]
        return tied[0] if len(tied) == 1 else self.rng.choice(tied)
