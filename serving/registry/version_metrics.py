"""Serving figures written to the MLflow model version they describe, as metrics that chart over time.

MLflow 3 keeps metrics on a *LoggedModel* (``ModelVersion.model_id`` names it; ``LoggedModel.metrics`` holds
every value with its timestamp and step) and links a version to it through the logged model's
``mlflow.modelVersions`` tag. The SQL registry does not store ``model_id`` on the version, and versions
registered from a file (every ``odh deploy``) have none at all, so the link is made here, once per
version: a LoggedModel named after the version in the ``odh-serving`` experiment, tagged both ways
(``mlflow.modelVersions`` on it, ``odh.serving.logged_model`` on the version), with its own run, since MLflow
logs a model's metrics through a run. Values are logged with ``model_id`` so they land on the logged model
and on its run (``get_metric_history``); the step is the window's end in Unix seconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.errors import RegistryError

if TYPE_CHECKING:  # mlflow is imported lazily: it is slow to import
    from mlflow import MlflowClient

EXPERIMENT = "odh-serving"
LOGGED_MODEL_TAG = "odh.serving.logged_model"  # on the version: the LoggedModel its metrics go to
VERSION_TAG = "odh.serving.model_version"  # on the LoggedModel and its run: "name/version"
RUN_TAG = "odh.serving.run"  # on a LoggedModel made elsewhere without a run: the run its metrics go through
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # MLflow's own link from a LoggedModel to registry versions
METRIC_NAMES = ("request_rate", "error_rate", "p50_ms", "p95_ms", "ready_replicas", "restarts")


@dataclass(frozen=True)
class VersionLink:
    model_id: str
    run_id: str


class VersionMetrics:
    """Writes and reads serving metrics of registry versions (one tracking store for both)."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None) -> None:
        import mlflow

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self._client: MlflowClient = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._artifact_root = artifact_root

    def link(self, name: str, version: str) -> VersionLink:
        """The LoggedModel (and run) that holds ``name`` version ``version``'s metrics; made on first use.

        Idempotent: the version's tag is read first, then a LoggedModel already tagged for the version (a run
        that died between creating it and tagging the version), and only then is one created.
        """
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_model_version(name, version)
        except MlflowException as exc:
            raise RegistryError(f"model {name!r} has no version {version}: {exc.message}") from exc
        model_id = found.model_id or (found.tags or {}).get(LOGGED_MODEL_TAG)
        if not model_id and found.source and found.source.startswith("models:/m-"):
            model_id = found.source.removeprefix("models:/").split("/", 1)[0]
        if model_id:
            logged = self._client.get_logged_model(model_id)
            run_id = logged.source_run_id or logged.tags.get(RUN_TAG) or self._attach_run(model_id, name, version, logged.experiment_id)
            self._tag_version(name, version, model_id)
            return VersionLink(model_id, run_id)
        experiment_id = self._experiment()
        key = f"{name}/{version}"
        existing = self._client.search_logged_models([experiment_id], filter_string=f"tags.`{VERSION_TAG}` = '{key}'")
        if existing:
            logged = min(existing, key=lambda m: m.creation_timestamp)
        else:
            run = self._client.create_run(experiment_id, run_name=f"{name}-v{version}-serving", tags={VERSION_TAG: key})
            self._client.set_terminated(run.info.run_id)  # a record, not a job: metrics still go to a finished run
            logged = self._client.create_logged_model(
                experiment_id, name=f"{name}-v{version}", source_run_id=run.info.run_id,
                tags={VERSION_TAG: key, MODEL_VERSIONS_TAG: json.dumps([{"name": name, "version": version}])})
            self._client.finalize_logged_model(logged.model_id, "READY")
        run_id = logged.source_run_id or logged.tags.get(RUN_TAG) or self._attach_run(logged.model_id, name, version, experiment_id)
        self._tag_version(name, version, logged.model_id)
        return VersionLink(logged.model_id, run_id)

    def record(self, name: str, version: str, figures: Mapping[str, float], *, timestamp_ms: int, step: int) -> VersionLink:
        """Log ``figures`` (a subset of ``METRIC_NAMES``) for the version at ``timestamp_ms``/``step``.

        Logging the same values at the same instant again (a retried task) adds nothing: MLflow keys a
        metric value by name, timestamp, step and value.
        """
        from mlflow.entities import Metric

        unknown = sorted(set(figures) - set(METRIC_NAMES))
        if unknown:
            raise ValueError(f"figures {unknown} are not serving metrics; use {', '.join(METRIC_NAMES)}")
        link = self.link(name, version)
        metrics = [Metric(key, float(value), timestamp_ms, step, model_id=link.model_id) for key, value in sorted(figures.items())]
        self._client.log_batch(link.run_id, metrics=metrics)
        return link

    def history(self, name: str, version: str) -> dict[str, list[tuple[int, float]]]:
        """Every value recorded for the version, per metric: ``[(step, value), ...]`` in step order, read back
        from the version's LoggedModel."""
        link = self.link(name, version)
        out: dict[str, list[tuple[int, float]]] = {}
        for metric in self._client.get_logged_model(link.model_id).metrics or []:
            out.setdefault(metric.key, []).append((int(metric.step), float(metric.value)))
        return {key: sorted(values) for key, values in out.items()}

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self._client.create_experiment(EXPERIMENT, artifact_location=self._artifact_root))
        except MlflowException:  # created meanwhile by another run
            again = self._client.get_experiment_by_name(EXPERIMENT)
            if again is None:
                raise
            return str(again.experiment_id)

    def _attach_run(self, model_id: str, name: str, version: str, experiment_id: str) -> str:
        """A LoggedModel made elsewhere without a run gets none from MLflow: metrics then go through one of ours."""
        run = self._client.create_run(experiment_id, run_name=f"{name}-v{version}-serving", tags={VERSION_TAG: f"{name}/{version}"})
        self._client.set_terminated(run.info.run_id)
        self._client.set_logged_model_tags(model_id, {RUN_TAG: run.info.run_id})
        return str(run.info.run_id)

    def _tag_version(self, name: str, version: str, model_id: str) -> None:
        found = self._client.get_model_version(name, version)
        if (found.tags or {}).get(LOGGED_MODEL_TAG) != model_id:
            self._client.set_model_version_tag(name, version, LOGGED_MODEL_TAG, model_id)
