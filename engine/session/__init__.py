"""The Session: one conversation with one user (see :mod:`engine.session.session` for its parts)."""

from engine.session.session import Session

__all__ = ["Session"]
