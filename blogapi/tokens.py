"""The revoked-token table: access tokens refused before they expire (see POST /logout)."""

from datetime import datetime

from sqlmodel import Field, SQLModel

from blogapi.db import UTCDateTime


class RevokedToken(SQLModel, table=True):
    __tablename__ = "revoked_tokens"

    token_id: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
