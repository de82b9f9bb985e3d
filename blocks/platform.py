"""Platform block: which embedded platform (state directory) flows deploy to, saved once in the UI."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from serving.config import state_dir
from serving.platform import Platform, connect


class LocalPlatformBlock(Block):
    """The embedded platform started by ``odh up`` for one state directory."""

    _block_type_name = "odh Local Platform"
    _description = "The odh embedded platform (local daemon) that InferenceServices are deployed to."

    state_dir: str | None = Field(default=None, description="State directory; empty means $ODH_STATE_DIR or ~/.odh.")

    def resolved_state_dir(self) -> str:
        return str(state_dir(self.state_dir))

    def platform(self) -> Platform:
        return connect(state_dir(self.state_dir))
