"""Database URLs for each consumer (Airflow metadata, MLflow backend, our own tables).

``database.kind: sqlite`` puts one file per consumer under the state folder. ``postgres`` treats
``database.url`` as an admin connection and creates ``<db_prefix>_<purpose>`` on that server on
first use. Callers get a SQLAlchemy URL string; it may hold a password, so never log it raw:
use :func:`redact`.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.engine import make_url

from exfm.config import ExfmConfig

Purpose = Literal["airflow", "mlflow", "exfm"]


def redact(url: str) -> str:
    """The URL with its password hidden (safe for logs)."""
    return make_url(url).render_as_string(hide_password=True)


def database_url(cfg: ExfmConfig, purpose: Purpose, create: bool = True) -> str:
    """SQLAlchemy URL of ``purpose``'s database; creates the PostgreSQL database if missing."""
    if cfg.database.kind == "sqlite":
        path = cfg.state_path / "db" / f"{purpose}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    admin = make_url(cfg.database.url.get_secret_value())
    if admin.drivername == "postgres":
        admin = admin.set(drivername="postgresql")
    name = f"{cfg.database.db_prefix}_{purpose}"
    if create:
        _ensure_postgres_database(admin, name)
    return admin.set(database=name).render_as_string(hide_password=False)


def _ensure_postgres_database(admin_url, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": name}).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # noqa: BLE001 - turn driver noise into one clear line
        raise RuntimeError(f"database: cannot reach or create '{name}' at "
                           f"{admin_url.render_as_string(hide_password=True)}: {e}") from e
    finally:
        engine.dispose()
