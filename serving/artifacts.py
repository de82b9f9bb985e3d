"""Phase 1, upload: put a model's files where every replica (and a cluster) can fetch them.

A local file or directory is copied into the artifact store under its content digest, so uploading the
same bytes twice stores them once. A model already in remote storage (``s3://``, ``http(s)://``,
``pvc://``, ``models:/``) is not copied: it is fetched once through the storage cache to learn its
digest and format, and its URI is kept as it is.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from serving.policy import detect_format
from serving.storage import StorageSettings, digest_tree, fetch

LOCAL_SCHEMES = ("file://",)


@dataclass(frozen=True)
class UploadedModel:
    uri: str  # where replicas fetch the model from
    digest: str  # sha256 of the model's file tree: the identity used for idempotent registration
    model_format: str
    files: tuple[str, ...]


def is_local(source: str) -> bool:
    return source.startswith("file://") or ("://" not in source and not source.startswith("models:/"))


def upload_model(source: str, artifact_dir: Path, settings: StorageSettings, model_format: str | None = None) -> UploadedModel:
    """Upload ``source`` (idempotently) and describe it."""
    if is_local(source):
        path = Path(source.removeprefix("file://")).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"model path {path} does not exist")
        with tempfile.TemporaryDirectory(dir=_ensure(artifact_dir)) as staging:
            staged = Path(staging) / "model"
            if path.is_dir():
                shutil.copytree(path, staged)
            else:
                staged.mkdir()
                shutil.copy2(path, staged / path.name)
            digest = digest_tree(staged)
            target = artifact_dir / digest
            if not target.exists():
                staged.rename(target)
        local = target
        uri = target.as_uri()
    else:
        local = fetch(source, settings)
        digest = digest_tree(local)
        uri = source
    files = tuple(sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()))
    return UploadedModel(uri=uri, digest=digest, model_format=model_format or detect_format(list(files)), files=files)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
