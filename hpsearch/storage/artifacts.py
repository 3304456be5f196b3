"""Where a study's checkpoints are shared: `artifact_store:` or HPSEARCH_ARTIFACT_STORE, opened.

Precedence: the `HPSEARCH_ARTIFACT_STORE` environment variable (`s3://bucket/prefix/`,
`file:///shared/dir`) > `artifact_store:` in the study file > none, and then checkpoints stay in
the local artifacts folder of the machine that trained them (one machine). The store is Optuna's
own (`optuna.artifacts`), so optuna-dashboard and `optuna.artifacts.download_artifact` read it.
S3 credentials are boto3's business (its environment, profile or role), never hpsearch's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from hpsearch.errors import StorageError
from hpsearch.spec import FileSystemStore, LoadedSpec, S3Store, parse_store_url

ARTIFACT_STORE_ENV = "HPSEARCH_ARTIFACT_STORE"


class ArtifactStore(Protocol):
    """Optuna's artifact-store protocol (its own is private): what `optuna.artifacts` calls."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


@dataclass(frozen=True)
class SharedStore:
    """An opened artifact store, with what to print about it and where an artifact lands."""

    store: ArtifactStore
    spec: FileSystemStore | S3Store
    source: str  # "HPSEARCH_ARTIFACT_STORE" or "artifact_store: in <file>"
    base: str  # `/shared/ckpt` or `s3://bucket/prefix`

    def location(self, artifact_id: str) -> str:
        """Where the artifact's bytes are: a path or an s3:// URL a person can use."""
        if isinstance(self.spec, FileSystemStore):
            return str(Path(self.base) / artifact_id)
        return f"{self.base}{artifact_id}"

    @property
    def label(self) -> str:
        return f"{self.base} (from {self.source})"


def resolve_store(
    loaded: LoadedSpec, environ: Mapping[str, str] | None = None
) -> tuple[FileSystemStore | S3Store, str] | None:
    """The store the study is configured with, and where that was said; None: local folders."""
    env = os.environ if environ is None else environ
    value = env.get(ARTIFACT_STORE_ENV, "").strip()
    if value:
        try:
            return parse_store_url(value), ARTIFACT_STORE_ENV
        except ValueError as e:
            raise StorageError(f"{ARTIFACT_STORE_ENV}: {e}") from None
    if loaded.spec.artifact_store is not None:
        return loaded.spec.artifact_store, f"artifact_store: in {loaded.path}"
    return None


def open_store(
    loaded: LoadedSpec, environ: Mapping[str, str] | None = None, *, writable: bool = True
) -> SharedStore | None:
    """Open the configured store (see the module docstring), or None when there is none.

    For writing (a worker), a file-system store's folder is created when missing and must be
    writable; readers (`hpsearch best`, the dashboard) only read it. A relative path is relative
    to the study file. Raises StorageError (one line) when the store cannot be used.
    """
    resolved = resolve_store(loaded, environ)
    if resolved is None:
        return None
    spec, source = resolved
    if isinstance(spec, FileSystemStore):
        return _file_system(loaded, spec, source, writable)
    return _s3(spec, source)


def _file_system(
    loaded: LoadedSpec, spec: FileSystemStore, source: str, writable: bool
) -> SharedStore:
    from optuna.artifacts import FileSystemArtifactStore

    base = (loaded.directory / spec.path).resolve()
    if writable:
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"artifact store {base} ({source}) cannot be created: {e.strerror or e}; mount "
                "the shared folder there or change the path"
            ) from None
    # A reader may start before any worker made the folder: it then finds nothing, no error.
    mode = (os.W_OK if writable else os.R_OK) | os.X_OK
    if base.exists() and not os.access(base, mode):
        what = "writable" if writable else "readable"
        raise StorageError(
            f"artifact store {base} ({source}) is not {what} by this user (uid {os.getuid()}); "
            "fix its permissions or change the path"
        )
    return SharedStore(FileSystemArtifactStore(base), spec, source, str(base))


def _s3(spec: S3Store, source: str) -> SharedStore:
    try:
        import boto3
    except ImportError:
        raise StorageError(
            f"artifact store s3://{spec.bucket} ({source}) needs boto3: pip install boto3 "
            "(the image has it)"
        ) from None
    from optuna.artifacts import Boto3ArtifactStore

    # Credentials: boto3's own chain (environment, ~/.aws, the pod's or instance's role).
    client = boto3.client("s3", endpoint_url=spec.endpoint_url, region_name=spec.region)
    # avoid_buf_copy: stream the file instead of holding a copy of the checkpoint in memory.
    inner = Boto3ArtifactStore(spec.bucket, client=client, avoid_buf_copy=True)
    store: ArtifactStore = _Prefixed(inner, spec.prefix) if spec.prefix else inner
    return SharedStore(store, spec, source, f"s3://{spec.bucket}/{spec.prefix}")


class _Prefixed:
    """An artifact store whose keys all start with `prefix` (several studies in one bucket)."""

    def __init__(self, inner: ArtifactStore, prefix: str) -> None:
        self._inner = inner
        self._prefix = prefix

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._inner.open_reader(self._prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._inner.write(self._prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._inner.remove(self._prefix + artifact_id)
