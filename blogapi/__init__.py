"""blogapi: a REST API for users, posts and votes, built on FastAPI and SQLModel."""

__version__ = "0.6.0"
