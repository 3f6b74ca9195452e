"""Alembic's entry point: the URL comes from blogapi's settings, the schema from its models."""

from logging.config import fileConfig

from alembic import context
from sqlmodel import SQLModel

import blogapi.votes  # noqa: F401  (imports every table model)
from blogapi.config import settings
from blogapi.db import build_engine

config = context.config
if config.config_file_name is not None and config.attributes.get(
    "configure_logging", True
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations() -> None:
    url = config.attributes.get("database_url", settings.database_url)
    engine = build_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
