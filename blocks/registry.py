"""Registry block: the MLflow tracking/registry URI flows register model versions in."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field

from serving.registry import ModelRegistry


class MLflowRegistryBlock(Block):
    _block_type_name = "odh MLflow Registry"
    _description = "An MLflow tracking server or database used as the model registry."

    tracking_uri: str = Field(description="e.g. sqlite:////home/me/.odh/mlflow.db or http://mlflow:5000")

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.tracking_uri)
