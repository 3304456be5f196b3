"""MySQL and MariaDB: trial times kept to the microsecond, as on every other backend."""

from __future__ import annotations

import sqlalchemy as sa

# Optuna's tables declare DATETIME, which MySQL and MariaDB store to the second: a trial's start
# and end lose their fraction (a 0.4 s trial lasts 0 or 1 s, and a trial read back is not the
# trial written). DATETIME(6) keeps microseconds; Optuna, its CLI and the dashboard read it as
# before, and its schema check looks at its migration version only.
_COLUMNS = {"trials": ("datetime_start", "datetime_complete")}


def mysql_microseconds(engine: sa.Engine) -> None:
    """Widen Optuna's DATETIME columns to DATETIME(6) where they are not yet (idempotent)."""
    inspector = sa.inspect(engine)
    with engine.begin() as c:
        for table, columns in _COLUMNS.items():
            if not inspector.has_table(table):
                continue
            for column in inspector.get_columns(table):
                if column["name"] in columns and getattr(column["type"], "fsp", None) != 6:
                    null = "NULL" if column["nullable"] else "NOT NULL"
                    c.exec_driver_sql(
                        f"ALTER TABLE {table} MODIFY {column['name']} DATETIME(6) {null}"
                    )
