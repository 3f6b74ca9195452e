"""The /login router: the OAuth2 password flow that hands out access tokens."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from sqlmodel import SQLModel, select

from blogapi.db import SessionDep
from blogapi.errors import error_responses
from blogapi.security import create_access_token, verify_password
from blogapi.users import User


class Token(SQLModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


router = APIRouter(tags=["authentication"])


@router.post(
    "/login", summary="Log in for an access token", responses=error_responses(403)
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep
) -> Token:
    email = form.username.lower()
    user = (
        session.exec(select(User).where(User.email == email)).first()
        if "\0" not in email
        else None
    )
    if not verify_password(form.password, user.password_hash if user else None):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Invalid Credentials")
    return Token(access_token=create_access_token(user.id))
