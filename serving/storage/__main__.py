"""``python -m serving.storage URI DEST [--cache-dir DIR]``: KServe's storage-initializer command line.

Prints the local model path; on failure prints the error and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from serving.errors import StorageError
from serving.storage.fetch import initialize
from serving.storage.settings import StorageSettings


def _default_cache_dir() -> Path:
    from serving.config import model_cache_dir, state_dir

    return model_cache_dir(state_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.storage", description="Fetch a model into DEST.")
    parser.add_argument("uri", help="storage URI (s3://, pvc://, file://, http(s)://, models:/NAME@ALIAS, a path)")
    parser.add_argument("dest", type=Path, help="directory that will hold the model files (e.g. /mnt/models)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: the state directory's models/)")
    parser.add_argument("--pvc-root", type=Path, default=None, help="local directory standing in for PVCs")
    args = parser.parse_args(argv)
    overrides = {"pvc_root": args.pvc_root} if args.pvc_root else {}
    try:
        settings = StorageSettings.from_env(args.cache_dir or _default_cache_dir(), **overrides)
        path = initialize(args.uri, args.dest, settings)
    except (StorageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(os.fspath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
