"""``hf://ORG/NAME[:REVISION]``: a Hugging Face model repository, as KServe's storage initializer spells it.

The local Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``) is read first; only a model missing there
is downloaded, and never when ``HF_HUB_OFFLINE`` is set. The fingerprint is the snapshot's commit, so a
model already in our cache is not copied again until the repository moves to a new commit.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from serving.errors import StorageError

PREFIX = "hf://"
# huggingface_hub's repo-id rule: "name" or "org/name", letters, digits and -_. (no "--" or "..").
_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")


def parse_hf_uri(uri: str) -> tuple[str, str | None]:
    """``hf://org/name:rev`` -> ``("org/name", "rev")``; StorageError naming the form on anything else."""
    body = uri[len(PREFIX):] if uri.startswith(PREFIX) else ""
    repo, _, revision = body.partition(":")
    repo = repo.strip("/")
    if not _REPO_ID.match(repo) or "--" in repo or ".." in repo:
        raise StorageError(f"{uri!r}: expected hf://ORG/NAME or hf://ORG/NAME:REVISION (a Hugging Face repo id)")
    return repo, revision or None


class HfSource:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.repo_id, self.revision = parse_hf_uri(uri)

    def _snapshot(self, local_only: bool) -> Path:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.repo_id, revision=self.revision, local_files_only=local_only))

    def _resolve(self) -> Path:
        from huggingface_hub import constants
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return self._snapshot(local_only=True)
        except LocalEntryNotFoundError:
            pass
        if constants.HF_HUB_OFFLINE:
            raise StorageError(
                f"{self.uri}: {self.repo_id} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                "HF_HUB_OFFLINE is set: run `hf download " + self.repo_id + "` where the Hub is reachable, "
                "or deploy a local model directory"
            )
        try:
            return self._snapshot(local_only=False)
        except Exception as exc:  # network, auth, missing repo: one clear message
            raise StorageError(
                f"{self.uri}: {self.repo_id} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                f"and downloading it failed: {type(exc).__name__}: {exc}"
            ) from exc

    def fingerprint(self) -> list[str]:
        snapshot = self._resolve()
        return [self.repo_id, snapshot.name]  # the snapshot folder is named after its commit

    def download(self, into: Path) -> None:
        # Snapshot files are symlinks into the blob store: copy their content.
        shutil.copytree(self._resolve(), into, symlinks=False, dirs_exist_ok=True)
