"""One transaction per admin operation, with duplicate names turned into ``Conflict``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aiforge.platform.domain.errors import Conflict
from aiforge.platform.services import repository as repo


class UnitOfWork:
    """Opens sessions; after a commit that changed keys or limits, tells the key cache."""

    def __init__(
        self, sessions: sessionmaker[Session], *, on_access_change: Callable[[], None]
    ) -> None:
        self._sessions = sessions
        self._on_access_change = on_access_change

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self, *, access_changed: bool = False, conflict: str = "") -> Iterator[Session]:
        """A committed transaction. ``access_changed`` bumps the version other gateways poll
        and reloads this process's cache; ``conflict`` is the message for a unique clash."""
        try:
            with self._sessions.begin() as session:
                yield session
                if access_changed:
                    repo.bump_access_version(session)
        except IntegrityError as error:
            raise Conflict(conflict or "this change conflicts with an existing resource") from error
        if access_changed:
            self._on_access_change()
