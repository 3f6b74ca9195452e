"""The course's app, as its sections build it: the yardstick `load.py --course` measures
`POST /posts/` against (the target: blogapi at 1.5x or more of this, in the same run).

Written the way the course teaches it, on the same tables as blogapi: a declarative
SQLAlchemy model per table, `def` routes run in FastAPI's thread pool, a `get_db`
session per request, `get_current_user` decoding the token and loading the user with
`db.query(...).first()`, and `db.add`, `db.commit`, `db.refresh` to create a post.
Two changes so the bench can drive it: the token is blogapi's (the user id in `sub`, so
one login serves both apps), and the driver is the one blogapi installs (psycopg 3,
sync), the course's psycopg2 being gone from the requirements.

    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/bench_small \\
        uvicorn course_app:app --app-dir bench --workers 1
"""

# The course passes dependencies as `Depends(...)` defaults (B008), and so does this copy.
# ruff: noqa: B008

import os
from collections.abc import Iterator
from datetime import datetime

import jwt
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    create_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session, relationship, sessionmaker

engine = create_engine(os.environ["BENCH_DATABASE_URL"])
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)
SECRET_KEY = os.environ["SECRET_KEY"]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True, nullable=False)
    email = Column(String, nullable=False, unique=True)
    password_hash = Column(String, nullable=False)
    created_at = Column(DateTime(timezone=True), nullable=False)


class Post(Base):
    __tablename__ = "posts"
    id = Column(Integer, primary_key=True, nullable=False)
    title = Column(String, nullable=False)
    content = Column(String, nullable=False)
    published = Column(Boolean, server_default="TRUE", nullable=False)
    created_at = Column(DateTime(timezone=True), nullable=False, default=datetime.now)
    votes = Column(Integer, nullable=False, default=0)
    owner_id = Column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    owner = relationship("User")


class PostCreate(BaseModel):
    title: str
    content: str
    published: bool = True


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    created_at: datetime


class PostOut(PostCreate):
    model_config = ConfigDict(from_attributes=True)
    id: int
    created_at: datetime
    owner_id: int
    owner: UserOut


def get_db() -> Iterator[Session]:
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="login")


def get_current_user(
    token: str = Depends(oauth2_scheme), db: Session = Depends(get_db)
) -> User:
    credentials_exception = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        raise credentials_exception from None
    user = db.query(User).filter(User.id == int(payload["sub"])).first()
    if user is None:
        raise credentials_exception
    return user


app = FastAPI()


@app.get("/")
def root() -> dict[str, str]:
    return {"message": "Hello World"}


@app.post("/posts", status_code=status.HTTP_201_CREATED, response_model=PostOut)
def create_posts(
    post: PostCreate,
    db: Session = Depends(get_db),
    current_user: User = Depends(get_current_user),
) -> Post:
    new_post = Post(owner_id=current_user.id, **post.model_dump())
    db.add(new_post)
    db.commit()
    db.refresh(new_post)
    return new_post
