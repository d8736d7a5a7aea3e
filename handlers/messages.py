"""The channel-agnostic message types: what a channel hands to the engine and gets back.

Adapters (bot/telegram_channel.py, bot/wecom_channel.py, bot/webchat.py, the terminal chat)
translate their platform's updates into ``Incoming`` and render ``Reply`` objects; nothing in
handlers/ knows about Telegram or WeCom types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Channel = Literal["telegram", "wecom", "web", "cli"]


@dataclass(frozen=True)
class Attachment:
    file_name: str
    data: bytes
    mime_type: str | None = None


@dataclass(frozen=True)
class Incoming:
    """One user action: a typed text, a button choice, or a file."""

    channel: Channel
    user_key: str  # platform user id: WeCom userid, Telegram user id, web/cli staff code
    text: str = ""
    choice: str | None = None  # the value of a pressed button (callback data / EventKey)
    attachments: tuple[Attachment, ...] = ()
    display_name: str | None = None
    external_id: str | None = None  # update_id / MsgId, for de-duplication by the adapter
    #: False in a group chat, where others read the replies (personal or admin answers are refused).
    private: bool = True
    #: The client's network address (web), for the audit trail.
    client_address: str | None = None


@dataclass(frozen=True)
class Choice:
    label: str
    value: str  # at most 64 bytes (Telegram callback_data limit)


@dataclass(frozen=True)
class FileReply:
    file_name: str
    data: bytes
    mime_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Reply:
    text: str
    choices: tuple[Choice, ...] = ()
    file: FileReply | None = None
    #: Set when the user pressed a button of a notification that is now dealt with: the channel
    #: replaces that message's buttons with this text (WeCom ``update_template_card``, Telegram
    #: ``editMessageReplyMarkup``), so that nobody presses them again.
    settle: str | None = None


@dataclass(frozen=True)
class Outgoing:
    """A message the system sends on its own (a notification) to a staff member, not to a
    channel: ``handlers.notifications.notify`` keeps it in the web inbox and a ``ChannelRouter``
    queues it for the person's chat channels. ``dedupe_key`` makes it once-only."""

    staff_id: int
    reply: Reply
    kind: str = "notice"
    dedupe_key: str | None = None


class MessageHandler(Protocol):
    """What a channel adapter needs of the engine (``handlers.engine.ConversationEngine``)."""

    def handle(self, msg: Incoming) -> list[Reply]: ...


__all__ = ["Attachment", "Channel", "Choice", "FileReply", "Incoming", "MessageHandler", "Outgoing", "Reply"]
