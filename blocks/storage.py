"""Storage block: S3-compatible storage credentials and endpoint for the storage initializer."""

from __future__ import annotations

import os

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class S3StorageBlock(Block):
    _block_type_name = "odh S3 Storage"
    _description = "An S3-compatible object store (AWS, MinIO, Ceph...) that models are fetched from."

    endpoint_url: str | None = Field(default=None, description="Empty for AWS; e.g. http://minio:9000")
    region: str | None = Field(default=None, description="e.g. us-east-1")
    # Both keys are secrets: the UI masks them and the API returns them obfuscated.
    access_key_id: SecretStr | None = Field(default=None, description="AWS_ACCESS_KEY_ID")
    secret_access_key: SecretStr | None = Field(default=None, description="AWS_SECRET_ACCESS_KEY")

    def environment(self) -> dict[str, str]:
        """The variables boto3 (and the storage initializer) read."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id.get_secret_value() if self.access_key_id else None,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key.get_secret_value() if self.secret_access_key else None,
        }
        return {k: v for k, v in env.items() if v}

    def export(self) -> None:
        os.environ.update(self.environment())
