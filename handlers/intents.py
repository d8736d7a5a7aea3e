"""Intent routing: what does this text (or menu button) ask for?

A pure function of the text: no database, no permissions (the engine checks those, so that a
physician typing an admin command gets a clear "admins only" answer instead of a policy search).

* Slash commands work everywhere: ``/ask``, ``/refer``, ``/cancel``, ``/help``, ``/bind``, ``/start``,
  ``/status``, ``/whoami`` and the admin commands ``/invite``, ``/users``, ``/role``, ``/unbind``.
  A Telegram group suffix (``/bind@YiLianBot``) is ignored.
* Chinese (and English) keywords work as a whole message, e.g. ``转诊``, ``取消``, ``帮助``,
  ``菜单``, ``提醒``, ``配额``; those that take an argument accept it after a space:
  ``绑定 ABCD2345``, ``邀请 dr_wang_sy``. A longer sentence that merely contains a keyword
  (``转诊需要什么条件？``) is a policy question.
* Everything else is a policy question (the default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from knowledge.textnorm import is_mostly_latin as is_latin


class IntentKind(StrEnum):
    ASK = "ask"
    REFER = "refer"
    CANCEL = "cancel"
    HELP = "help"
    START = "start"
    BIND = "bind"
    STATUS = "status"  # reminders / quotas (进修、下派、坐诊)
    WHOAMI = "whoami"
    LOGIN = "login"  # a one-time link that signs the user in to the web pages
    INVITE = "invite"  # admin
    USERS = "users"  # admin
    ROLE = "role"  # admin
    UNBIND = "unbind"  # admin
    UNKNOWN_COMMAND = "unknown_command"

# Who may use which intent is decided in one place: ``storage.access.COMMAND_RULES`` (keyed by
# the values above).


@dataclass(frozen=True)
class Intent:
    kind: IntentKind
    #: The rest of the message after the command word (the question for ASK).
    arg: str = ""
    #: True when the user typed a command or keyword (not a free-text question).
    explicit: bool = False
    #: The user wrote in English (an English keyword or a Latin-script question).
    english: bool = False


_SLASH: dict[str, IntentKind] = {
    "ask": IntentKind.ASK, "q": IntentKind.ASK,
    "refer": IntentKind.REFER, "referral": IntentKind.REFER,
    "cancel": IntentKind.CANCEL, "stop": IntentKind.CANCEL,
    "help": IntentKind.HELP, "menu": IntentKind.HELP,
    "start": IntentKind.START,
    "bind": IntentKind.BIND,
    "status": IntentKind.STATUS, "reminders": IntentKind.STATUS, "quota": IntentKind.STATUS,
    "quotas": IntentKind.STATUS,
    "whoami": IntentKind.WHOAMI, "me": IntentKind.WHOAMI,
    "login": IntentKind.LOGIN, "signin": IntentKind.LOGIN,
    "invite": IntentKind.INVITE,
    "users": IntentKind.USERS,
    "role": IntentKind.ROLE, "roles": IntentKind.ROLE,
    "unbind": IntentKind.UNBIND,
}

# Keywords recognised when they are the whole message (after trimming punctuation).
_KEYWORDS: dict[str, IntentKind] = {
    "提问": IntentKind.ASK, "政策问答": IntentKind.ASK, "政策咨询": IntentKind.ASK,
    "转诊": IntentKind.REFER, "发起转诊": IntentKind.REFER, "我要转诊": IntentKind.REFER,
    "新建转诊": IntentKind.REFER, "转诊登记": IntentKind.REFER,
    "取消": IntentKind.CANCEL, "退出": IntentKind.CANCEL, "算了": IntentKind.CANCEL,
    "不用了": IntentKind.CANCEL, "取消操作": IntentKind.CANCEL,
    "帮助": IntentKind.HELP, "菜单": IntentKind.HELP, "功能": IntentKind.HELP,
    "使用说明": IntentKind.HELP, "你能做什么": IntentKind.HELP, "?": IntentKind.HELP, "？": IntentKind.HELP,
    "开始": IntentKind.START,
    "绑定": IntentKind.BIND, "绑定账号": IntentKind.BIND, "绑定身份": IntentKind.BIND,
    "提醒": IntentKind.STATUS, "我的提醒": IntentKind.STATUS, "配额": IntentKind.STATUS,
    "名额": IntentKind.STATUS, "进修": IntentKind.STATUS, "下派": IntentKind.STATUS,
    "坐诊": IntentKind.STATUS, "进修名额": IntentKind.STATUS, "下派名额": IntentKind.STATUS,
    "提醒配额": IntentKind.STATUS, "配额查询": IntentKind.STATUS,
    "我是谁": IntentKind.WHOAMI, "我的身份": IntentKind.WHOAMI,
    "登录": IntentKind.LOGIN, "网页登录": IntentKind.LOGIN, "登录网页": IntentKind.LOGIN, "登陆": IntentKind.LOGIN,
    "人员列表": IntentKind.USERS, "用户列表": IntentKind.USERS,
    "邀请": IntentKind.INVITE,
    # English words typed without a slash
    "ask": IntentKind.ASK,
    "refer": IntentKind.REFER, "referral": IntentKind.REFER,
    "cancel": IntentKind.CANCEL, "quit": IntentKind.CANCEL,
    "help": IntentKind.HELP, "menu": IntentKind.HELP,
    "bind": IntentKind.BIND, "login": IntentKind.LOGIN, "reminders": IntentKind.STATUS, "quota": IntentKind.STATUS,
    "quotas": IntentKind.STATUS,
}
# Keywords that take an argument after a space: ``绑定 ABCD2345``, ``邀请 dr_wang_sy``.
_KEYWORDS_WITH_ARG: dict[str, IntentKind] = {
    "绑定": IntentKind.BIND, "邀请": IntentKind.INVITE, "角色": IntentKind.ROLE, "解绑": IntentKind.UNBIND,
    "bind": IntentKind.BIND, "invite": IntentKind.INVITE,
}
_ENGLISH_KEYWORDS = frozenset(k for k in [*_KEYWORDS, *_KEYWORDS_WITH_ARG] if k.isascii() and k.isalpha())

_SLASH_RE = re.compile(r"^[/／]([A-Za-z_]+)(?:@\w+)?(?:\s+(.*))?$", re.DOTALL)
_TRIM = " \t\r\n。.!！~～"


def route(text: str) -> Intent:
    """The intent of a typed message (or of a menu button's command value)."""
    raw = (text or "").strip()
    m = _SLASH_RE.match(raw)
    if m:
        word = m.group(1).lower()
        arg = (m.group(2) or "").strip()
        kind = _SLASH.get(word)
        if kind is None:
            return Intent(IntentKind.UNKNOWN_COMMAND, arg=word, explicit=True)
        # The language of a command is the language of its argument (``/ask What is…``).
        return Intent(kind, arg=arg, explicit=True, english=kind == IntentKind.ASK and is_latin(arg))
    bare = raw.strip(_TRIM)
    key = bare.lower()
    if key in _KEYWORDS:
        return Intent(_KEYWORDS[key], explicit=True, english=key in _ENGLISH_KEYWORDS)
    head, _, rest = bare.partition(" ")
    if not rest:
        head, _, rest = bare.partition("\u3000")
    head_key = head.lower()
    if rest.strip() and head_key in _KEYWORDS_WITH_ARG and _looks_like_argument(
        _KEYWORDS_WITH_ARG[head_key], rest.strip()
    ):
        return Intent(_KEYWORDS_WITH_ARG[head_key], arg=rest.strip(), explicit=True,
                      english=head_key in _ENGLISH_KEYWORDS)
    return Intent(IntentKind.ASK, arg=raw, explicit=False, english=is_latin(raw))


_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{2,50}$")
_ROLE_ARG_RE = re.compile(r"^[A-Za-z0-9_\-]{2,50}(?:[\s,;，；、]+[A-Za-z\u4e00-\u9fff]{2,15}){0,4}$")


def _looks_like_argument(kind: IntentKind, rest: str) -> bool:
    """``绑定 ABCD2345`` is a command; ``invite a colleague to the meeting`` is a question."""
    if kind == IntentKind.ROLE:
        return bool(_ROLE_ARG_RE.match(rest))
    return bool(_TOKEN_RE.match(rest))


__all__ = ["Intent", "IntentKind", "route"]
