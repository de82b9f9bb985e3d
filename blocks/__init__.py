"""Prefect Blocks users save in the UI: platform, registry, storage."""

from blocks.platform import LocalPlatformBlock
from blocks.registry import MLflowRegistryBlock
from blocks.storage import S3StorageBlock

__all__ = ["LocalPlatformBlock", "MLflowRegistryBlock", "S3StorageBlock"]
