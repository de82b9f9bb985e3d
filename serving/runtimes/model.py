"""The model abstraction of the model server, after KServe's ``kserve/model.py``.

A ``Model`` knows nothing about HTTP or protocols: the V1/V2 adapters decode a request into a list
of ``Tensor``s, ``Model.__call__`` runs ``preprocess -> predict -> postprocess`` and returns tensors,
and the adapters encode those. Subclasses override ``load`` and ``predict`` (and ``preprocess`` when
the framework wants something other than one 2-D array).

As in KServe, each step may be a plain function or a coroutine. A model whose steps are all plain
functions (``blocking``: the built-in sklearn and MLflow runtimes) is run by the server on its predict
threads through ``infer``, so the event loop keeps answering probes while it computes; a coroutine
step runs on the event loop and must not block it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from serving.runtimes.errors import InferenceError, InferenceServerError, InvalidInput, ModelNotFound, ModelNotReady
from serving.runtimes.v2 import Tensor

OUTPUT_NAME = "output-0"
"""Name of the single output tensor, as KServe's predictive runtimes name it."""


class Model:
    """Base class: a named model that loads once and then answers ``predict`` on tensors."""

    platform = ""

    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        self.ready = False

    async def load(self) -> bool:
        """Load weights; set ``ready``. Blocking loaders should run in a thread (``asyncio.to_thread``)."""
        self.ready = True
        return self.ready

    def preprocess(self, inputs: list[Tensor]) -> Any:
        return inputs

    def predict(self, payload: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.predict")

    def postprocess(self, result: Any) -> list[Tensor]:
        return to_tensors(result)

    @functools.cached_property
    def blocking(self) -> bool:
        """True when no step is a coroutine: ``infer`` runs the model, on a thread of the caller's choosing."""
        return not any(inspect.iscoroutinefunction(s) for s in (self.preprocess, self.predict, self.postprocess))

    def infer(self, inputs: list[Tensor]) -> list[Tensor]:
        """The three steps of a ``blocking`` model, synchronously (the server calls this off its event loop)."""
        if not self.blocking:
            raise TypeError(f"{type(self).__name__} has coroutine steps: await the model instead of infer()")
        with self._failures():
            return self.postprocess(self.predict(self.preprocess(inputs)))

    async def __call__(self, inputs: list[Tensor]) -> list[Tensor]:
        """Run the three steps, awaiting those that are coroutines."""
        with self._failures():
            payload = await _resolved(self.preprocess(inputs))
            result = await _resolved(self.predict(payload))
            return await _resolved(self.postprocess(result))

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """Anything but our own errors becomes a 500 naming the model."""
        try:
            yield
        except InferenceServerError:
            raise
        except Exception as exc:  # the model's own failure: report it, keep serving
            raise InferenceError(f"model '{self.name}' failed: {type(exc).__name__}: {exc}") from exc

    # Metadata for GET /v2/models/{name}; subclasses that know their signature fill these in.
    def input_metadata(self) -> list[dict[str, Any]]:
        return []

    def output_metadata(self) -> list[dict[str, Any]]:
        return []

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": self.platform,
            "inputs": self.input_metadata(),
            "outputs": self.output_metadata(),
        }


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def single_2d_input(inputs: list[Tensor]) -> np.ndarray:
    """The usual predictive-model input: one 2-D tensor, or several 1-D tensors taken as columns."""
    if len(inputs) == 1:
        tensor = inputs[0]
        if tensor.data.ndim != 2:
            raise InvalidInput(
                f"input '{tensor.name}' must be 2-D [rows, features], got shape {list(tensor.data.shape)}"
            )
        return tensor.data
    rows = {t.data.shape[0] if t.data.ndim else -1 for t in inputs}
    if len(rows) != 1 or any(t.data.ndim not in (1, 2) or (t.data.ndim == 2 and t.data.shape[1] != 1) for t in inputs):
        names = ", ".join(f"'{t.name}' {list(t.data.shape)}" for t in inputs)
        raise InvalidInput(f"several inputs are taken as columns and must all be [rows] or [rows, 1]: {names}")
    return np.column_stack([t.data.reshape(-1) for t in inputs])


def to_tensors(result: Any) -> list[Tensor]:
    """A framework's prediction -> output tensors: arrays and lists are ``output-0``, tables one per column."""
    if isinstance(result, dict):
        return [Tensor.from_numpy(str(k), _array(v)) for k, v in result.items()]
    columns = getattr(result, "columns", None)
    if columns is not None and hasattr(result, "to_numpy"):  # a pandas DataFrame, without importing pandas
        return [Tensor.from_numpy(str(c), _array(result[c].to_numpy())) for c in columns]
    return [Tensor.from_numpy(OUTPUT_NAME, _array(result))]


def _array(values: Any) -> np.ndarray:
    array = np.asarray(values.to_numpy() if hasattr(values, "to_numpy") else values)
    if array.dtype.kind == "U":
        array = array.astype(object)
    return array


class ModelRepository:
    """The models this process serves, by name (one, in practice, but lookups still say 404 clearly)."""

    def __init__(self, models: Iterable[Model] = ()) -> None:
        self._models: dict[str, Model] = {}
        for model in models:
            self.add(model)

    def add(self, model: Model) -> None:
        self._models[model.name] = model

    def names(self) -> list[str]:
        return list(self._models)

    def models(self) -> list[Model]:
        return list(self._models.values())

    def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            served = ", ".join(repr(n) for n in self._models) or "none"
            raise ModelNotFound(f"model '{name}' is not served here; this server serves: {served}")
        return model

    def get_ready(self, name: str) -> Model:
        model = self.get(name)
        if not model.ready:
            raise ModelNotReady(f"model '{name}' is not ready yet (still loading)")
        return model

    @property
    def ready(self) -> bool:
        return bool(self._models) and all(m.ready for m in self._models.values())

    async def load_all(self) -> None:
        for model in self._models.values():
            if not model.ready:
                await model.load()
