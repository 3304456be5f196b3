"""Where a study lives: the storage URL's precedence, its password, and its redaction.

Precedence, first match wins: the `--storage` flag > the `HPSEARCH_STORAGE` environment variable >
Optuna's own `OPTUNA_STORAGE` > `storage:` in the study file > the default SQLite file
`<home>/hpsearch.db`, where <home> is `default_home`: the project's own `storage/` folder when it
has one (hpsearch's own checkout does), else a folder of this project's own in this user's data
folder; never the root of whatever repository the study file sits in, never an unrelated
ancestor's `storage/`, never a file two projects share.

A password never comes from the study file or the command line (both are visible: in version
control and in `ps`). It comes from `HPSEARCH_DB_PASSWORD`, or from `HPSEARCH_STORAGE`, and is
never printed: every URL shown to a person goes through `StorageURL.redacted`.

`StorageURL.secret_url` is the plain SQLAlchemy URL, the one form every part of hpsearch uses;
only the constructor of Optuna's `RDBStorage` needs its braces doubled (`storage.open`).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hpsearch.errors import StorageError
from hpsearch.spec import LoadedSpec
from hpsearch.storage.url_options import check_query

PASSWORD_ENV = "HPSEARCH_DB_PASSWORD"
STORAGE_ENV = "HPSEARCH_STORAGE"

# SQLAlchemy drivers installed with hpsearch; a bare dialect gets the one we ship.
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}  # fmt: skip


@dataclass(frozen=True)
class StorageURL:
    """A resolved storage URL. `str()` is redacted; `secret_url` holds the password."""

    secret_url: str
    source: str

    @property
    def kind(self) -> str:
        """`sqlite`, `postgresql`, `mysql` or `grpc`."""
        if self.secret_url.startswith("grpc://"):
            return "grpc"
        return make_url(self.secret_url).get_backend_name()

    @property
    def redacted(self) -> str:
        if self.kind == "grpc":
            return self.secret_url
        return make_url(self.secret_url).render_as_string(hide_password=True)

    @property
    def sqlite_path(self) -> Path | None:
        if self.kind != "sqlite":
            return None
        database = make_url(self.secret_url).database
        return Path(database) if database and database != ":memory:" else None

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"StorageURL({self.redacted!r}, source={self.source!r})"


PROXY_PORT = 13000  # the storage proxy's default port (`grpc://host` without one)


def require_grpc() -> None:
    """The storage proxy (server and `grpc://` client) needs the `grpc` extra.

    Raises:
        StorageError: one line naming the extra.
    """
    import importlib.util

    if importlib.util.find_spec("grpc") is None:
        raise StorageError(
            "the storage proxy (grpc://, `hpsearch storage-proxy`) needs gRPC, which is not "
            "installed; pip install 'hpsearch[grpc]'"
        )


OPTUNA_STORAGE_ENV = "OPTUNA_STORAGE"  # what the optuna CLI and optuna-dashboard read
HOME_ENV = "HPSEARCH_HOME"


def default_home(study_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where hpsearch keeps a study's database and artifacts when nothing says otherwise.

    The project's own `storage/` folder, else a folder of this project's own in this user's data
    folder. The project is the git checkout holding the study file, or, outside any checkout,
    the study file's folder. Its `storage/` is a `storage/` folder in the study file's folder or
    above it up to the checkout's root (a project opts in by making one; hpsearch's own checkout
    has it); outside a checkout only the study file's own folder counts, never an ancestor that
    happens to hold a `storage/`. Else `<data>/projects/<project>-<hash of its path>`, where
    <data> is `$HPSEARCH_HOME`, else `$XDG_DATA_HOME/hpsearch` or `~/.local/share/hpsearch`
    (`~/Library/Application Support/hpsearch` on macOS, `%LOCALAPPDATA%\\hpsearch` on Windows):
    two projects never share a study by accident, whatever their studies are named.
    """
    root = checkout_root(study_dir)
    for folder in (study_dir, *study_dir.parents) if root is not None else (study_dir,):
        if (folder / "storage").is_dir():
            return folder / "storage"
        if folder == root:
            break  # a folder above belongs to something else
    project = root if root is not None else study_dir
    digest = hashlib.sha256(str(project).encode()).hexdigest()[:12]
    return data_home(environ) / "projects" / f"{_safe(project.name)}-{digest}"


def checkout_root(folder: Path) -> Path | None:
    """The root of the git checkout holding `folder` (where `.git` is), or None."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def data_home(environ: Mapping[str, str] | None = None) -> Path:
    """This user's hpsearch data folder: `$HPSEARCH_HOME`, else the platform's (see
    `default_home`)."""
    env = os.environ if environ is None else environ
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "hpsearch"
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "hpsearch"
    data = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "hpsearch"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "project"


def resolve(
    loaded: LoadedSpec, *, flag: str | None = None, environ: Mapping[str, str] | None = None
) -> StorageURL:
    """Pick the storage URL by precedence (see the module docstring) and add the password.

    Nothing is written: the default SQLite file's folder is made when a worker opens it.

    Raises:
        StorageError: the URL is malformed, or a password is on the command line.
    """
    env = os.environ if environ is None else environ
    given = flag_or_env(flag, env)
    if given is not None:
        raw, source = given
    elif loaded.spec.storage:
        raw, source = loaded.spec.storage, f"{loaded.path}: storage"
    else:
        db = default_home(loaded.directory.resolve(), env) / "hpsearch.db"
        raw, source = f"sqlite:///{db}", "default"
    return normalise(raw, source, base=loaded.directory.resolve(), password=env.get(PASSWORD_ENV))


def flag_or_env(flag: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(URL, where it came from) from `--storage`, `HPSEARCH_STORAGE` or `OPTUNA_STORAGE`.

    Raises:
        StorageError: a password on the command line.
    """
    if flag:
        if _password_of(flag) is not None:
            raise StorageError(
                "--storage: a password on the command line is visible to every user in `ps`; "
                f"remove it and set {PASSWORD_ENV} (or put the whole URL in {STORAGE_ENV})"
            )
        return flag, "--storage"
    if env.get(STORAGE_ENV):
        return env[STORAGE_ENV], STORAGE_ENV
    if env.get(OPTUNA_STORAGE_ENV):  # Optuna's own variable, as its CLI and dashboard read it
        return env[OPTUNA_STORAGE_ENV], OPTUNA_STORAGE_ENV
    return None


def _password_of(raw: str) -> str | None:
    if raw.startswith("grpc://"):
        return None
    try:
        return make_url(raw).password
    except (ArgumentError, ValueError):
        return None  # normalise says what is wrong with it


def _check_grpc(raw: str, source: str) -> None:
    if any(c in raw for c in "?#@"):
        raise StorageError(
            f"{source}: a storage proxy URL takes no options, user or password; write "
            "grpc://proxy-host:13000 (the proxy holds the database URL)"
        )
    _, _, port = raw.removeprefix("grpc://").rstrip("/").partition(":")
    if port and not port.isdigit():
        raise StorageError(
            f"{source}: the storage proxy's port must be a number, but got {port!r}; write e.g. "
            "grpc://proxy-host:13000"
        )


_RAW_AT = (
    "{source}: the storage URL has more than one `@` before its host, so its password holds a "
    "raw `@` (or `/`, `?`, `#`); percent-encode the password (`@` is %40, `/` is %2F), e.g. "
    'with python3 -c "import getpass, urllib.parse; print(urllib.parse.quote('
    "getpass.getpass(), safe=''))\", or set the password alone in HPSEARCH_DB_PASSWORD"
)


def _raw_password(raw: str) -> bool:
    """Whether a server URL's password holds a raw `@`, `/`, `?` or `#`: SQLAlchemy would then
    take the rest of it for the host, database or query, and print it in every log line."""
    scheme, _, rest = raw.partition("://")
    if scheme.startswith("sqlite") or "@" not in rest:
        return False  # a file path may hold an `@`; only server URLs carry a password
    userinfo, _, _ = rest.partition("@")
    return rest.count("@") > 1 or any(c in userinfo for c in "/?#")


def _shown(raw: str) -> str:
    """`raw` for an error message, unless a password could be in it (a `:` or `@` after the
    scheme): then the scheme only."""
    scheme, sep, rest = raw.partition("://")
    if not re.search(r"[:@]", rest if sep else raw):
        return repr(raw)
    return f"{scheme}://..." if sep and "@" not in scheme else "the URL given"


def normalise(raw: str, source: str, *, base: Path, password: str | None) -> StorageURL:
    """A URL as given (`source` says where) -> the `StorageURL` every part of hpsearch uses.

    The driver is the one hpsearch ships, a relative SQLite path is taken from `base` (and its
    folder created), and `password` is set on server URLs.

    Raises:
        StorageError: the URL is malformed or names an unsupported database.
    """
    if raw.startswith("grpc://"):
        _check_grpc(raw, source)
        return StorageURL(raw, source)
    if _raw_password(raw):
        # make_url would take what follows the first `@` for the host and print it in every
        # log line: the rest of the password. The URL is not shown here for the same reason.
        raise StorageError(_RAW_AT.format(source=source))
    try:
        url = make_url(raw)
    except ValueError:  # int() of the port
        raise StorageError(
            f"{source}: the storage URL's port is not a number; write e.g. "
            "postgresql+psycopg://user@host:5432/db"
        ) from None
    except ArgumentError:
        raise StorageError(
            f"{source}: {_shown(raw)} is not a storage URL; use e.g. "
            "sqlite:///storage/hpsearch.db, postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db"
        ) from None
    if "@" in (url.host or ""):  # the rest of a password that held a raw `@`
        raise StorageError(_RAW_AT.format(source=source))
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise StorageError(
            f"{source}: storage {backend!r} is not supported; use sqlite, postgresql, mysql "
            "or grpc://host:port (the storage proxy)"
        )
    check_query(backend, url.query, source)
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    if backend == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database).expanduser()
        if not path.is_absolute():
            path = base / path
        url = url.set(database=str(path.resolve()))
    if password is not None and backend != "sqlite":
        url = url.set(password=password)
    # SQLAlchemy percent-encodes the password (`@ % / :`), so the rendered URL parses back.
    return StorageURL(url.render_as_string(hide_password=False), source)
