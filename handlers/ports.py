"""What the conversation logic needs from the application around it, as protocols.

``bot.context.AppContext`` and ``bot.config.Settings`` satisfy these; handlers/ names only the
protocols, so imports keep running one way (bot → handlers → knowledge → storage) and a test can
hand the engine any object with these attributes.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


class EngineSettings(Protocol):
    dialog_ttl_minutes: int
    invite_ttl_hours: int
    login_link_ttl_minutes: int
    default_consortium: str | None

    @property
    def web_base_url(self) -> str:
        """Where a browser reaches this assistant (for links we send, e.g. ``/login``)."""
        ...


class EngineContext(Protocol):
    settings: Any  # an ``EngineSettings``; ``Any`` so that pydantic's Settings class fits without a cast
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def kb(self) -> Any: ...


__all__ = ["EngineContext", "EngineSettings"]
