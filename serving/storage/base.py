"""What every storage scheme provides to the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Source(Protocol):
    """One model location. The cache asks for a fingerprint first, then downloads only on a miss."""

    uri: str

    def fingerprint(self) -> Any:
        """A JSON-able summary of the source's current state (sizes, mtimes, ETags, resolved version)
        that changes whenever its content does; ``None`` when the store offers none (always download)."""
        ...

    def download(self, into: Path) -> None:
        """Write the model's files into the existing, empty directory ``into``."""
        ...
