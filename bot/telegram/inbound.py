"""What a Telegram update asks for.

Only new messages and callback queries (button presses) are answered; everything else
(edited messages, channel posts, membership changes …) is ignored — the bot asks Telegram for
``message`` and ``callback_query`` updates only (``ALLOWED_UPDATES``), so those rarely arrive.

``classify(update)`` returns an ``Action``:

* ``engine``: hand ``incoming`` to the conversation engine (text, or a button's callback data as
  ``choice``);
* ``file``: a document: download it (``file_id``, size and type checked first), then hand
  ``incoming`` with the file attached to the engine;
* ``note``: answer ``note`` ourselves (an unsupported message type, an unreadable button);
* ``ignore``.

In groups the bot answers only what is meant for it: commands (``/help``, ``/help@ThisBot``; not
those addressed to another bot), messages mentioning ``@ThisBot``, replies to its messages, and its
buttons. Everything else said in a group is ignored (with privacy mode on, Telegram does not even
send it).

``chat_key(update)`` is where replies go (the chat id; for a private chat that is the user id).
The engine knows the user by ``str(from_user.id)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from telegram import Chat, Message, Update

from handlers.dialogs.base import decode_choice
from handlers import meeting_service
from handlers.referral.service import ACTION_PREFIX, decode_action
from handlers.messages import Incoming

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]

SUPPORTED_NOTE = (
    ("抱歉，暂时无法处理这类消息。目前支持：\n"
     "· 文字消息（政策问答、转诊、/help 查看全部功能）\n"
     "· 点击消息下方的按钮进行选择\n"
     "· 管理员发送政策文件（PDF、DOCX、TXT 或 MD）\n"
     "请改用文字描述您的问题。"),
    ("Sorry, I cannot handle this kind of message yet. I understand:\n"
     "· text messages (policy questions, referrals; /help shows everything)\n"
     "· pressing the buttons under my messages\n"
     "· policy documents sent by administrators (PDF, DOCX, TXT or MD)\n"
     "Please describe your question in text."),
)
BAD_BUTTON_NOTE = (
    "抱歉，无法识别这个按钮（可能来自旧版本的消息）。请重新发送您的问题，或发送 /help 查看全部功能。",
    ("Sorry, I do not recognise that button (it may belong to an old message). Please send your "
     "request again, or /help to see what I can do."),
)


def english(update: Update) -> bool:
    user = update.effective_user
    code = (user.language_code or "") if user else ""
    return code.lower().startswith("en")


def pick(pair: tuple[str, str], update: Update) -> str:
    return pair[1] if english(update) else pair[0]


@dataclass(frozen=True)
class Action:
    kind: str  # engine | file | note | ignore
    incoming: Incoming | None = None
    note: str | None = None
    file_id: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    mime_type: str | None = None


def chat_key(update: Update) -> str | None:
    chat = update.effective_chat
    if chat is not None:
        return str(chat.id)
    if update.callback_query is not None:  # the message is gone: answer in the private chat
        return str(update.callback_query.from_user.id)
    return None


def choice_ok(data: str) -> bool:
    """A callback data value the engine understands: a dialog button, a referral's action button
    (``r:accept:42``), a meeting answer (``m:attend:7:1796000000``) or a command."""
    data = data.strip()
    if not data:
        return False
    if data.startswith("d:"):
        return decode_choice(data) is not None
    if data.startswith(ACTION_PREFIX):
        return decode_action(data) is not None
    if data.startswith(meeting_service.ACTION_PREFIX):
        return meeting_service.decode_action(data) is not None
    return data.startswith("/") and len(data) > 1


def _meant_for_bot(message: Message, bot_username: str | None) -> bool:
    """Whether a group message addresses the bot."""
    text = message.text or message.caption or ""
    me = (bot_username or "").lower()
    if text.startswith("/"):
        command = text.split(maxsplit=1)[0]
        _, at, target = command.partition("@")
        return not at or (bool(me) and target.lower() == me)
    if me and f"@{me}" in text.lower():
        return True
    replied = message.reply_to_message
    return bool(replied and replied.from_user and replied.from_user.is_bot and me
                and (replied.from_user.username or "").lower() == me)


def _without_mention(text: str, bot_username: str | None) -> str:
    """``@ThisBot 问题`` → ``问题`` (commands keep their ``@ThisBot`` suffix: the engine drops it)."""
    if not bot_username or text.startswith("/"):
        return text
    stripped = re.sub(rf"@{re.escape(bot_username)}\b", " ", text, flags=re.IGNORECASE).strip()
    return stripped or text


def classify(update: Update, external_id: str | None = None, *, bot_username: str | None = None) -> Action:
    """What to do with ``update``; ``bot_username`` (without @) decides what a group message
    addresses (without it, group messages other than plain commands are ignored)."""
    user = update.effective_user
    if user is None or user.is_bot:
        return Action("ignore")
    chat = update.effective_chat
    base: dict[str, Any] = {"channel": "telegram", "user_key": str(user.id), "display_name": user.full_name,
                            "external_id": external_id,
                            # replies go to the chat: in a group, others read them
                            "private": chat is None or chat.type == Chat.PRIVATE}

    query = update.callback_query
    if query is not None:
        data = query.data
        if not isinstance(data, str) or not choice_ok(data):
            return Action("note", note=pick(BAD_BUTTON_NOTE, update))
        return Action("engine", Incoming(choice=data.strip(), **base))

    message = update.message
    if message is None:
        return Action("ignore")
    if message.chat.type != Chat.PRIVATE and not _meant_for_bot(message, bot_username):
        return Action("ignore")
    if message.text:
        return Action("engine", Incoming(text=_without_mention(message.text, bot_username), **base))
    if message.document is not None:
        doc = message.document
        return Action("file", Incoming(text=message.caption or "", **base), file_id=doc.file_id,
                      file_name=doc.file_name, file_size=doc.file_size, mime_type=doc.mime_type)
    if message.new_chat_members or message.left_chat_member or message.group_chat_created or \
            message.pinned_message or message.new_chat_title or message.migrate_from_chat_id:
        return Action("ignore")  # service messages in groups
    return Action("note", note=pick(SUPPORTED_NOTE, update))


__all__ = [
    "ALLOWED_UPDATES",
    "BAD_BUTTON_NOTE",
    "SUPPORTED_NOTE",
    "Action",
    "chat_key",
    "choice_ok",
    "classify",
    "english",
    "pick",
]
