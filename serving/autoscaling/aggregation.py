"""Knative's windowed aggregations (``pkg/autoscaler/aggregation``), over an injectable clock.

``TimedBuckets`` keeps one bucket per ``granularity`` seconds of a ``window`` and answers the linear
average over the part of the window that has data; ``WeightedBuckets`` answers an exponentially weighted
one instead (newer buckets count more); ``MaxWindow`` is the "highest value recorded in the last N
seconds" that delays scale-down decisions. Times are monotonic seconds (floats); a bucket is the integer
``floor(now / granularity)``, as Knative divides Unix seconds.
"""

from __future__ import annotations

import math
from collections import deque

# Knative's constants for the weighted average: the weights should sum to at least this much, and the
# decay multiplier never goes below MIN_EXPONENT (very long windows would otherwise be a plain average).
WEIGHT_PRECISION = 0.9999
MIN_EXPONENT = 0.2
_ROUND_DIGITS = 6


def smoothing_coefficient(buckets: float) -> float:
    """The per-bucket decay multiplier for a window of ``buckets`` buckets."""
    return max(1 - math.pow(1 - WEIGHT_PRECISION, 1 / buckets), MIN_EXPONENT)


class TimedBuckets:
    """A ring of per-``granularity`` sums over ``window`` seconds; ``window_average`` is their linear mean.

    The mean is over the buckets since the first write when the window is not yet full, and leaves out
    the buckets after the last write when data has stopped arriving (a partial window), as Knative does;
    gaps inside the window count as zeros. A value older than the window is ignored.
    """

    def __init__(self, window: float, granularity: float = 1.0) -> None:
        if window <= 0 or granularity <= 0:
            raise ValueError(f"window ({window}) and granularity ({granularity}) must be positive")
        self.window = window
        self.granularity = granularity
        self.buckets = [0.0] * math.ceil(window / granularity)
        self.total = 0.0
        self.first: int | None = None  # bucket index of the first write of the current run of data
        self.last: int | None = None  # bucket index of the latest write

    def _index(self, now: float) -> int:
        return math.floor(now / self.granularity)

    def record(self, now: float, value: float) -> None:
        index = self._index(now)
        size = len(self.buckets)
        if self.last is None or self.first is None:
            self.first = self.last = index
        elif index != self.last:
            if (index - self.last) * self.granularity <= -self.window:
                return  # older than the window: nothing to add it to
            if index < self.first:
                self.first = index
            if index > self.last:
                if (index - self.last) * self.granularity >= self.window:
                    # a whole window without data: start over, so the average is of the new run only
                    self.first = index
                    self.buckets = [0.0] * size
                    self.total = 0.0
                else:
                    # clear the buckets skipped since the last write (they hold values a window old)
                    for skipped in range(self.last + 1, index + 1):
                        self.total -= self.buckets[skipped % size]
                        self.buckets[skipped % size] = 0.0
                self.last = index
        self.buckets[index % size] += value
        self.total += value

    def is_empty(self, now: float) -> bool:
        """True when nothing was recorded in the last ``window`` seconds."""
        return self.last is None or (self._index(now) - self.last) * self.granularity > self.window

    def window_average(self, now: float) -> float:
        if self.last is None or self.first is None:
            return 0.0
        index = self._index(now)
        size = len(self.buckets)
        behind = index - self.last
        if behind <= 0:
            valid = min(self.last - self.first + 1, size)
            return round(self.total / valid, _ROUND_DIGITS)
        if behind * self.granularity < self.window:
            # no data for a while: the buckets since the last write hold values older than the window
            remaining = self.total - sum(self.buckets[i % size] for i in range(self.last + 1, index + 1))
            valid = min(self.last - self.first + 1, size - behind)
            return round(remaining / valid, _ROUND_DIGITS)
        return 0.0


class WeightedBuckets(TimedBuckets):
    """``TimedBuckets`` whose average weighs bucket k back from the newest by ``m * (1 - m)**k``."""

    def __init__(self, window: float, granularity: float = 1.0) -> None:
        super().__init__(window, granularity)
        self.smoothing = smoothing_coefficient(math.ceil(window / granularity))

    def window_average(self, now: float) -> float:
        if self.last is None or self.is_empty(now):
            return 0.0
        size = len(self.buckets)
        count = size
        multiplier = self.smoothing
        index = self._index(now)
        if index > self.last:
            # the buckets since the last write are zeros: skip straight to the weight of the last one
            zeros = index - self.last
            multiplier *= math.pow(1 - self.smoothing, zeros)
            count -= zeros
        result = 0.0
        for back in range(count):
            result += self.buckets[(self.last - back) % size] * multiplier
            multiplier *= 1 - self.smoothing
        return result


class MaxWindow:
    """The largest value recorded in the last ``ceil(duration / granularity)`` buckets (Knative's
    descending-minima window), used to hold a scale-down until a lower value has lasted ``duration``."""

    def __init__(self, duration: float, granularity: float) -> None:
        self.size = math.ceil(duration / granularity)
        self.granularity = granularity
        self._maxima: deque[tuple[int, int]] = deque()  # (bucket index, value), values descending

    def record(self, now: float, value: int) -> None:
        index = math.floor(now / self.granularity)
        # a smaller, older value can never be the maximum again: the new one is larger and more recent
        while self._maxima and value >= self._maxima[-1][1]:
            self._maxima.pop()
        while self._maxima and index - self._maxima[0][0] >= self.size:
            self._maxima.popleft()
        if self._maxima and self._maxima[-1][0] == index:
            _, previous = self._maxima.pop()
            value = max(value, previous)
        self._maxima.append((index, value))

    def current(self) -> int:
        return self._maxima[0][1] if self._maxima else 0
