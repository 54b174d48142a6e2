"""Alembic ``env.py`` for a Redshift database reached with IAM credentials (copy it to ``migrations/env.py``).

Configure the URL in ``alembic.ini`` (``sqlalchemy.url = ...?plugin=rs_iam&workgroup=...``) or, to keep
deployment details out of the repository, in the ``RS_IAM_URL`` environment variable. The plugin fetches
temporary credentials when Alembic connects; nothing else changes.

Notes for Redshift: use the ``redshift+redshift_connector`` (or ``redshift+psycopg2``) dialect from
sqlalchemy-redshift, so autogenerate reflects tables with Redshift's catalog; Redshift runs DDL inside
transactions, so ``transaction_per_migration`` keeps each migration atomic. A NullPool is right for a
short-lived command.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
target_metadata = None  # e.g. `from myapp.models import Base; target_metadata = Base.metadata`


def database_url() -> str:
    url = os.environ.get("RS_IAM_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set RS_IAM_URL or sqlalchemy.url in alembic.ini")
    return url


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: render SQL without connecting (and so without fetching credentials)."""
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    section = dict(config.get_section(config.config_ini_section) or {})
    section["sqlalchemy.url"] = database_url()
    connectable = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
    connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
