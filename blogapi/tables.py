"""Every table, for the migrations and the tests: importing this module registers each
feature module's table models on one metadata. The models stay in their feature modules;
a new table model is added here too, or autogenerate won't see it."""

from sqlmodel import SQLModel

from blogapi.auth import RevokedToken
from blogapi.email_verification import EmailVerificationToken
from blogapi.login_sessions import LoginSession, RefreshToken
from blogapi.password_reset import PasswordResetToken
from blogapi.posts import Post
from blogapi.users import User
from blogapi.votes import Vote

__all__ = [
    "EmailVerificationToken",
    "LoginSession",
    "PasswordResetToken",
    "Post",
    "RefreshToken",
    "RevokedToken",
    "User",
    "Vote",
    "metadata",
]

metadata = SQLModel.metadata
