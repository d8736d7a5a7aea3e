"""What a decrypted WeCom callback asks for.

``parse_plaintext`` turns the decrypted XML into a dict of its fields (wechatpy's
``parse_message``; ``file`` messages and ``template_card_event`` are "unknown" to wechatpy, so the
raw fields are used throughout). ``dedupe_key`` is the id under which the callback is handled
once: ``MsgId`` for messages; for events, which have none, a digest of FromUserName + CreateTime +
Event + EventKey + TaskId (user and time alone collide). ``classify`` says what to do with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from wechatpy.enterprise import parse_message

from handlers.messages import Incoming

SUPPORTED_NOTE_ZH = (
    "抱歉，暂时无法处理这类消息。目前支持：\n"
    "· 文字消息（政策问答、转诊等）\n"
    "· 可识别出文字的语音消息\n"
    "· 点击消息中的按钮进行选择\n"
    "· 管理员发送政策文件（PDF、DOCX、TXT 或 MD）\n"
    "请改用文字描述您的问题。"
)
VOICE_NOTE_ZH = "抱歉，未能识别这条语音的内容。请再说一遍，或直接发送文字。"

#: Events that carry a user's choice in EventKey.
_CHOICE_EVENTS = frozenset({"template_card_event", "click"})


class MalformedMessage(ValueError):
    pass


def parse_plaintext(xml: str) -> dict[str, Any]:
    """The fields of a decrypted WeCom message (raises ``MalformedMessage``)."""
    try:
        message = parse_message(xml)
    except Exception as exc:  # ExpatError, KeyError (no MsgType) ...
        raise MalformedMessage(f"{type(exc).__name__}: {exc}") from None
    data = getattr(message, "_data", None)
    if not isinstance(data, dict) or not data.get("FromUserName") or not data.get("MsgType"):
        raise MalformedMessage("message without FromUserName/MsgType")
    return dict(data)


def _s(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if isinstance(value, dict):  # <Tag><![CDATA[x]]></Tag> with attributes, or nested elements
        value = value.get("#text", "")
    return str(value).strip()


def dedupe_key(fields: dict[str, Any]) -> str:
    msg_id = _s(fields, "MsgId")
    if msg_id:
        return f"msg:{msg_id}"
    parts = [_s(fields, k) for k in ("FromUserName", "CreateTime", "Event", "EventKey", "TaskId")]
    return "ev:" + hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class Action:
    """``kind``: ``engine`` (hand ``incoming`` to the engine), ``file`` (download ``media_id`` first and
    add it to ``incoming`` as an attachment),
    ``note`` (answer ``note`` ourselves) or ``ignore``."""

    kind: str
    incoming: Incoming | None = None
    note: str | None = None
    media_id: str | None = None
    file_name: str | None = None


def classify(fields: dict[str, Any], external_id: str | None = None) -> Action:
    user = _s(fields, "FromUserName")
    msg_type = _s(fields, "MsgType").lower()
    if msg_type == "text":
        content = _s(fields, "Content")
        if not content:
            return Action("ignore")
        return Action("engine", Incoming(channel="wecom", user_key=user, text=content, external_id=external_id))
    if msg_type == "voice":
        recognition = _s(fields, "Recognition")
        if recognition:
            return Action("engine", Incoming(channel="wecom", user_key=user, text=recognition, external_id=external_id))
        return Action("note", note=VOICE_NOTE_ZH)
    if msg_type == "file":
        media_id = _s(fields, "MediaId")
        if not media_id:
            return Action("note", note=SUPPORTED_NOTE_ZH)
        return Action("file", Incoming(channel="wecom", user_key=user, external_id=external_id), media_id=media_id,
                      file_name=_s(fields, "FileName") or _s(fields, "Title") or None)
    if msg_type == "event":
        event = _s(fields, "Event").lower()
        key = _s(fields, "EventKey")
        if event in _CHOICE_EVENTS and key:
            return Action("engine", Incoming(channel="wecom", user_key=user, choice=key, external_id=external_id))
        return Action("ignore")
    # image, video, shortvideo, location, link and anything new
    return Action("note", note=SUPPORTED_NOTE_ZH)


def needs_processing(fields: dict[str, Any]) -> bool:
    """False for callbacks that get no answer at all (so they are not even stored)."""
    return classify(fields).kind != "ignore"


__all__ = ["Action", "MalformedMessage", "SUPPORTED_NOTE_ZH", "VOICE_NOTE_ZH", "classify", "dedupe_key",
           "needs_processing", "parse_plaintext"]
