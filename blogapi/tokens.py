"""The revoked-token table: access tokens refused before they expire (see POST /logout)."""

from datetime import datetime

from sqlmodel import Field, SQLModel

from blogapi.db import UTCDateTime

TOKEN_ID_MAX_CHARS = 64
"""Ours are 32 hex digits (a uuid4)."""


class RevokedToken(SQLModel, table=True):
    __tablename__ = "revoked_tokens"

    token_id: str = Field(primary_key=True, max_length=TOKEN_ID_MAX_CHARS)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
