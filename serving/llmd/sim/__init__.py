"""An engine simulator for load tests: vLLM's OpenAI API, metrics and KV events, without a model.

``python -m serving.llmd.sim --model NAME --engines N --base-port P --zmq-base-port Z`` runs N engines
in one process. ``engine`` is the pure model (KV cache, admission, timing), ``events`` the ZMQ
publisher, ``tokenize`` the tokenizer, ``server`` the HTTP API.
"""

from serving.llmd.sim.engine import Engine, EngineConfig, KVCache, Scheduler, SimRequest, block_hashes
from serving.llmd.sim.events import KVEventPublisher, topic_for
from serving.llmd.sim.server import EngineAddress, EngineApp
from serving.llmd.sim.tokenize import load_tokenizer

__all__ = [
    "Engine", "EngineAddress", "EngineApp", "EngineConfig", "KVCache", "KVEventPublisher", "Scheduler",
    "SimRequest", "block_hashes", "load_tokenizer", "topic_for",
]
