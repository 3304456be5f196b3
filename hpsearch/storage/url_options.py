"""The query options a storage URL may carry: an allowlist per database.

Whatever follows `?` in a SQLAlchemy URL reaches the driver's `connect()`, and some driver
options run statements or read local files (`init_command`, `local_infile`, `options=-c ...`,
`read_default_file`, `service`). A reader such as `status` must not run a statement of the
URL's, so only connection settings (TLS, timeouts, the SQLite file's mode) are accepted.
"""

from __future__ import annotations

from collections.abc import Iterable

from hpsearch.errors import StorageError

ALLOWED = {
    "sqlite": frozenset({"mode", "uri", "immutable", "cache", "timeout", "nolock"}),
    "postgresql": frozenset({
        "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir", "sslsni",
        "sslcompression", "ssl_min_protocol_version", "ssl_max_protocol_version",
        "requiressl", "gssencmode", "channel_binding", "require_auth", "krbsrvname",
        "connect_timeout", "application_name", "target_session_attrs", "load_balance_hosts",
        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout", "host", "hostaddr", "port",
    }),
    "mysql": frozenset({
        "charset", "ssl_ca", "ssl_cert", "ssl_key", "ssl_check_hostname", "ssl_verify_cert",
        "ssl_verify_identity", "ssl_disabled", "connect_timeout", "read_timeout",
        "write_timeout", "unix_socket",
    }),
}  # fmt: skip


def check_query(backend: str, names: Iterable[str], source: str) -> None:
    """Refuse a query option outside the allowlist of `backend`.

    Raises:
        StorageError: one line naming the option and the allowed ones.
    """
    allowed = ALLOWED["mysql" if backend == "mariadb" else backend]
    for name in names:
        if name not in allowed:
            raise StorageError(
                f"{source}: the storage URL option {name!r} is not accepted (it could run "
                f"statements or read local files); remove it. A {backend} URL may carry: "
                f"{', '.join(sorted(allowed))}"
            )
