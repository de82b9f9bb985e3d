"""KV-cache indexer: which engine pod holds which prompt prefix, learned from vLLM's KV events.

Pure core (``events``, ``keys``, ``index``, ``tokenize``) plus a thin I/O shell (``subscriber``, ``server``).
"""

from serving.llmd.kvcache.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KVEventDecodeError,
    decode_message,
    decode_payload,
)
from serving.llmd.kvcache.index import KVIndex
from serving.llmd.kvcache.keys import block_keys, root_key

__all__ = [
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "EventBatch",
    "KVEventDecodeError",
    "KVIndex",
    "block_keys",
    "decode_message",
    "decode_payload",
    "root_key",
]
