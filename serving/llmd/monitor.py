"""The load monitor: scrapes each engine's ``/metrics`` every 50-100 ms and keeps ``PodState`` current.

Reads ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` and
``vllm:cache_config_info{block_size,num_gpu_blocks}``; counts the router's own in-flight requests per
pod (exact, covering the scrape lag); marks a pod unhealthy after ``fail_threshold`` consecutive failed
scrapes (or when the router reports connection failures) and healthy again when it answers, so pool
membership follows readiness. ``on_down``/``on_up`` callbacks let the router drop a pod's cache state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlparse

import orjson

from serving.llmd.scheduler import PodState
from serving.llmd.upstream import EnginePool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One engine: its OpenAI base URL, and its KV-event ZMQ endpoint when events are on."""

    url: str
    zmq_endpoint: str | None = None
    name: str = ""
    role: str = "both"
    replay_endpoint: str | None = None

    @property
    def pod(self) -> str:
        return self.name or pod_name(self.url)


def pod_name(url: str) -> str:
    parsed = urlparse(url)
    return parsed.netloc or url


_ENDPOINT_SCHEMES = ("tcp://", "ipc://", "inproc://")


def parse_engine(text: str) -> EngineSpec:
    """``URL[=ZMQ_ENDPOINT[,replay=ENDPOINT][,role=prefill|decode|both]]``, e.g.
    ``http://127.0.0.1:8001=tcp://127.0.0.1:5557,replay=tcp://127.0.0.1:5558``; ``URL,role=prefill``
    sets a role without events."""
    head, _, options = text.partition(",")
    url, sep, zmq = head.partition("=")
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"engine {text!r}: expected URL[=ZMQ_ENDPOINT] with an http(s) URL")
    if sep and not zmq.startswith(_ENDPOINT_SCHEMES):
        raise ValueError(f"engine {text!r}: the ZMQ endpoint must look like tcp://HOST:PORT")
    replay, role = None, "both"
    for option in filter(None, options.split(",")):
        key, eq, value = option.partition("=")
        if key == "replay" and eq and value.startswith(_ENDPOINT_SCHEMES):
            replay = value
        elif key == "role" and value in ("both", "prefill", "decode"):
            role = value
        else:
            raise ValueError(f"engine {text!r}: unknown option {option!r} (replay=tcp://HOST:PORT, role=ROLE)")
    return EngineSpec(url, zmq or None, role=role, replay_endpoint=replay)


_GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",  # older vLLM name
}
_INFO = ("vllm:cache_config_info", "vllm:cache_config_info_info")

# Ask for just these families with prometheus_client's ``name[]`` filter. vLLM answers a plain /metrics
# from a synchronous route that renders its whole registry (dozens of histograms) on the engine's API
# server, 13 times a second per engine at our interval; on real engines that took TTFT p90 from ~100 ms
# (scraping once a second) to 146-190 ms (docs/benchmarks.md). vLLM also mounts prometheus_client's
# ASGI app over /metrics/..., which honours the filter and renders only these. An engine that does not
# (another server, or vLLM in multi-process metrics mode, whose collector cannot be filtered by name) is
# read in full from then on.
FULL_METRICS_PATH = "/metrics"
FILTERED_METRICS_PATH = "/metrics/?" + urlencode([("name[]", n) for n in (*_GAUGES, _INFO[0])])

# Only the sample lines the monitor reads, found by one C-level scan of the whole text instead of the
# full exposition parser (which cost ~8 % of the router's CPU at one scrape per engine every 75 ms).
# A name must be followed by its label block or a blank, so longer names sharing the prefix do not
# match; quoted label values may hold spaces, commas, braces and escaped quotes.
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_SAMPLE = re.compile(
    r"^[ \t]*(" + "|".join(re.escape(n) for n in (*_GAUGES, *_INFO)) + r")"
    r"(\{(?:[^\"}]|" + _QUOTED + r")*\})?[ \t]+(\S+)", re.M)
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*(" + _QUOTED + ")")
_UNESCAPE = re.compile(r"\\(.)")


def _labels(block: str) -> dict[str, str]:
    return {k: _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), v[1:-1])
            for k, v in _LABEL.findall(block)}


def parse_vllm_metrics(text: str) -> dict[str, Any]:
    """The load figures in one ``/metrics`` text (summed over label sets, e.g. several model names).
    Samples whose value is not a finite number (NaN, +Inf) say nothing about load and are skipped."""
    out: dict[str, Any] = {}
    for name, block, raw in _SAMPLE.findall(text):
        field = _GAUGES.get(name)
        if field is not None:
            try:
                value = float(raw)
            except ValueError:
                continue
            if math.isfinite(value):
                out[field] = out.get(field, 0.0) + value
            continue
        labels = _labels(block)
        with contextlib.suppress(KeyError, ValueError, OverflowError):
            out["block_size"] = int(labels["block_size"])
        with contextlib.suppress(KeyError, ValueError, OverflowError):
            out["num_blocks"] = int(float(labels["num_gpu_blocks"]))
    if "running" in out:
        out["running"] = int(out["running"])
    if "waiting" in out:
        out["waiting"] = int(out["waiting"])
    return out


def apply_metrics(pod: PodState, values: dict[str, Any]) -> None:
    for field in ("running", "waiting", "kv_usage", "block_size", "num_blocks"):
        if field in values:
            setattr(pod, field, values[field])


class LoadMonitor:
    def __init__(
        self,
        engines: Iterable[EngineSpec],
        interval_s: float = 0.075,
        fail_threshold: int = 3,
        timeout_s: float = 1.0,
        on_down: Callable[[str], Any] | None = None,
        on_up: Callable[[str], Any] | None = None,
        on_scrape: Callable[[], Any] | None = None,
    ) -> None:
        self.engines = {e.pod: e for e in engines}
        # Unknown until the first successful scrape: a pod joins the pool when it answers.
        self.pods: dict[str, PodState] = {
            name: PodState(name=name, url=e.url, healthy=False, role=e.role) for name, e in self.engines.items()  # type: ignore[arg-type]
        }
        self.interval_s = interval_s
        self.fail_threshold = fail_threshold
        self.timeout_s = timeout_s
        self.on_down, self.on_up, self.on_scrape = on_down, on_up, on_scrape
        self.failures: dict[str, int] = {name: 0 for name in self.engines}
        self.max_model_len: dict[str, int] = {}
        self.metrics_path: dict[str, str] = dict.fromkeys(self.engines, FILTERED_METRICS_PATH)
        self.scrapes = 0
        self.clients: dict[str, EnginePool] = {}
        self._task: asyncio.Task[None] | None = None

    # -- the router's own in-flight count ------------------------------------------------------
    def begin(self, name: str) -> None:
        self.pods[name].in_flight += 1

    def end(self, name: str) -> None:
        pod = self.pods[name]
        pod.in_flight = max(0, pod.in_flight - 1)

    def snapshot(self) -> list[PodState]:
        return list(self.pods.values())

    def healthy(self) -> list[PodState]:
        return [p for p in self.pods.values() if p.healthy]

    # -- health transitions --------------------------------------------------------------------
    def report_failure(self, name: str) -> None:
        """A scrape failed, or the router could not connect to the pod."""
        self.failures[name] = self.failures.get(name, 0) + 1
        pod = self.pods[name]
        if pod.healthy and self.failures[name] >= self.fail_threshold:
            pod.healthy = False
            log.warning("pod %s left the pool after %d failures", name, self.failures[name])
            if self.on_down:
                self.on_down(name)

    def report_success(self, name: str) -> None:
        self.failures[name] = 0
        pod = self.pods[name]
        if not pod.healthy:
            pod.healthy = True
            log.info("pod %s joined the pool", name)
            if self.on_up:
                self.on_up(name)

    def mark_down(self, name: str) -> None:
        """Take a pod out at once (e.g. the router saw its connection refused)."""
        self.failures[name] = max(self.failures.get(name, 0), self.fail_threshold - 1)
        self.report_failure(name)

    # -- scraping ------------------------------------------------------------------------------
    async def scrape_once(self) -> None:
        await asyncio.gather(*(self._scrape(name) for name in self.engines))
        self.scrapes += 1
        if self.on_scrape:
            self.on_scrape()

    async def _scrape(self, name: str) -> None:
        try:
            values = await self._read_metrics(name)
        except Exception as exc:  # any failure counts against the pod
            log.debug("scrape of %s failed: %s", name, exc)
            self.report_failure(name)
            return
        apply_metrics(self.pods[name], values)
        if name not in self.max_model_len:
            await self._learn_model_len(name)
        self.report_success(name)

    async def _read_metrics(self, name: str) -> dict[str, Any]:
        path = self.metrics_path[name]
        response = await self._client(name).get(path)
        values = parse_vllm_metrics(response.body.decode("utf-8", "replace")) if response.status == 200 else {}
        if path != FULL_METRICS_PATH and "running" not in values:
            log.info("pod %s does not filter /metrics by name (HTTP %d): reading it whole", name, response.status)
            self.metrics_path[name] = path = FULL_METRICS_PATH
            response = await self._client(name).get(path)
            values = parse_vllm_metrics(response.body.decode("utf-8", "replace")) if response.status == 200 else {}
        if response.status != 200:
            raise ValueError(f"{path} answered {response.status}")
        return values

    async def _learn_model_len(self, name: str) -> None:
        with contextlib.suppress(Exception):
            response = await self._client(name).get("/v1/models")
            for model in orjson.loads(response.body).get("data", []):
                if isinstance(model.get("max_model_len"), int):
                    self.max_model_len[name] = model["max_model_len"]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.scrape_once()
            except Exception:  # never let the monitor die
                log.exception("load monitor pass failed")
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))

    def _client(self, name: str) -> EnginePool:
        pool = self.clients.get(name)
        if pool is None:
            pool = self.clients[name] = EnginePool(self.engines[name].url, connect_timeout=self.timeout_s,
                                                   read_timeout=self.timeout_s, max_idle=2)
        return pool

    async def start(self) -> None:
        await self.scrape_once()
        self._task = asyncio.create_task(self._loop(), name="llmd-load-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        clients, self.clients = self.clients, {}
        for pool in clients.values():
            await pool.close()
