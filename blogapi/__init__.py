"""blogapi: a REST API for users, posts and votes, built on FastAPI and SQLModel."""
