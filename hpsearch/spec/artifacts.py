"""Where a study's checkpoints are shared by every machine: a shared folder or an S3 bucket."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from hpsearch.spec._base import SpecModel
from hpsearch.spec.algorithms import _by_name


class FileSystemStore(SpecModel):
    """Optuna's `FileSystemArtifactStore` on a folder every worker mounts (NFS, Lustre, a PVC)."""

    type: Literal["filesystem"]
    path: str = Field(min_length=1)  # relative to the study file


class S3Store(SpecModel):
    """Optuna's `Boto3ArtifactStore`: AWS S3 or any S3-compatible server (MinIO, Ceph, R2).

    Credentials never come from here: boto3 reads them from its own environment
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or pod role).
    """

    type: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
    prefix: str = ""  # keys are `<prefix><artifact id>`
    endpoint_url: str | None = None  # None: boto3's own (AWS, or AWS_ENDPOINT_URL)
    region: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _no_credentials(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL such as `https://minio.internal:9000`, "
                             f"but got {url!r}")  # fmt: skip
        if parts.username or parts.password:
            raise ValueError(
                "credentials must never be written in the study file; remove them from the URL "
                "and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
            )
        return url


_Stores = Union[FileSystemStore, S3Store]  # noqa: UP007
ArtifactStoreSpec = Annotated[
    _Stores,
    Field(discriminator="type"),
    _by_name(
        "artifact store", "filesystem", "{type: filesystem, path: /shared/hpsearch}", _Stores
    ),
]

_S3_URL = re.compile(r"s3://(?P<bucket>[^/?#]+)/?(?P<prefix>[^?#]*)")


def parse_store_url(value: str) -> FileSystemStore | S3Store:
    """`HPSEARCH_ARTIFACT_STORE`: `s3://bucket/prefix/`, `file:///shared/dir` or `/shared/dir`.

    Raises ValueError with the forms it accepts.
    """
    if value.startswith("s3://"):
        match = _S3_URL.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not an s3://BUCKET/PREFIX URL")
        return S3Store(type="s3", bucket=match["bucket"], prefix=match["prefix"])
    path = value.removeprefix("file://")
    if not path.startswith("/"):
        raise ValueError(
            f"must be s3://BUCKET/PREFIX, file:///ABSOLUTE/PATH or an absolute path, "
            f"but got {value!r}"
        )
    return FileSystemStore(type="filesystem", path=path)
