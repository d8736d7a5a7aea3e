"""Every chat command × every role × every channel, through the real engine.

The expectations below are written out on purpose instead of being read from
``storage.access.COMMAND_RULES``: a change of who may do what must change both places.
"""

from __future__ import annotations

import pytest

from handlers.messages import Attachment, Incoming
from storage import access
from storage import repositories as repo

pytest_plugins = ("engine_support",)

# role -> (staff code, Telegram id); ``None`` code: an unbound user
ROLES = {
    "guest": (None, 990000001),
    "physician": ("dr_wang_sy", 990000002),
    "liaison": ("liaison_zhou_sy", 990000003),
    "admin": ("admin_sy", 990000004),
    "inactive": ("dr_zhao_sy", 990000005),  # deactivated below: treated as unbound
}
WECOM_IDS = {"physician": "wangsiyuan", "liaison": "zhouwanqing", "admin": "gaomingzhe", "inactive": "zhaoyiming",
             "guest": "stranger_not_in_directory"}
CHANNELS = ("telegram", "telegram_group", "wecom", "web", "cli")

# command -> (roles allowed, only in a private chat, text sent)
EXPECTED = {
    "ask": ({"guest", "physician", "liaison", "admin", "inactive"}, False, "联席会议多久开一次？"),
    "help": ({"guest", "physician", "liaison", "admin", "inactive"}, False, "/help"),
    "start": ({"guest", "physician", "liaison", "admin", "inactive"}, False, "/start"),
    "cancel": ({"guest", "physician", "liaison", "admin", "inactive"}, False, "/cancel"),
    "unknown_command": ({"guest", "physician", "liaison", "admin", "inactive"}, False, "/frobnicate"),
    "bind": ({"guest", "physician", "liaison", "admin", "inactive"}, True, "/bind ABCD2345"),
    "whoami": ({"physician", "liaison", "admin"}, True, "/whoami"),
    "login": ({"physician", "liaison", "admin"}, True, "/login"),
    "status": ({"physician", "liaison", "admin"}, False, "/status"),
    "quota": ({"liaison", "admin"}, False, "/quota"),
    "meetings": ({"physician", "liaison", "admin"}, False, "/meetings"),
    "attendance": ({"admin"}, True, "/attendance"),
    "record_training": ({"liaison", "admin"}, True, "/record"),
    "new_meeting": ({"admin"}, True, "/newmeeting"),
    "docs": ({"guest", "physician", "liaison", "admin", "inactive"}, False, "有哪些政策文件？"),
    "my_referrals": ({"physician", "liaison", "admin"}, True, "我的转诊记录"),
    "pending_referrals": ({"physician", "liaison", "admin"}, True, "待处理转诊"),
    "referral_view": ({"physician", "liaison", "admin"}, True, "ZD-2026-000001"),
    "refer": ({"physician", "liaison"}, True, "/refer"),
    "invite": ({"admin"}, True, "/invite dr_wang_sy"),
    "users": ({"admin"}, True, "/users"),
    "role": ({"admin"}, True, "/role dr_wang_sy"),
    "unbind": ({"admin"}, True, "/unbind dr_wang_sy"),
    "upload": ({"admin"}, True, None),
}

GUIDANCE = ("尚未绑定", "尚未登记", "未绑定的访客")
DENIALS = {
    "private": "请私聊我",
    "admin": "只有管理员可以管理人员",
    "clinical": "只有已绑定的医生或联络员",
    "upload": "只有管理员可以上传",
    "coordination": "只有联络员和管理员",
}
# What an allowed command visibly does (checked on private channels).
DONE = {
    "ask": "出处",
    "help": "我可以帮您",
    "start": "我可以帮您",
    "cancel": "没有进行中的操作",
    "unknown_command": "没有“/frobnicate”这个命令",
    "whoami": "人员代码",
    "status": "近期",
    "quota": "培训配额",
    "meetings": "会议",
    "attendance": "没有会议",
    "record_training": "登记哪类记录",
    "new_meeting": "会议类型",
    "docs": "份政策文件",
    "my_referrals": "还没有发起过转诊",
    "pending_referrals": "没有待处理的转诊",
    "referral_view": "没有找到转诊单号",
    "refer": "转诊方向",
    "invite": "绑定码",
    "users": "共",
    "role": "当前角色",
    "unbind": "Telegram 绑定",
    "upload": "✗",
}


def test_the_table_covers_every_intent_and_every_rule():
    from handlers.intents import IntentKind

    assert set(EXPECTED) == {k.value for k in IntentKind} | {"upload"} == set(access.COMMAND_RULES)


@pytest.fixture
def matrix_engine(engine, engine_ctx):
    with engine_ctx.sessions.begin() as session:
        for role, (code, telegram_id) in ROLES.items():
            if code is None:
                continue
            staff = repo.get_staff_by_code(session, code)
            staff.telegram_user_id = telegram_id
            if role == "inactive":
                staff.active = False
    return engine


def incoming(role: str, channel: str, command: str) -> Incoming:
    code, telegram_id = ROLES[role]
    text = EXPECTED[command][2]
    fields: dict = {"text": text or ""}
    if command == "upload":
        fields["attachments"] = (Attachment("tool.exe", b"MZ\x90\x00 not a policy"),)
    if channel in ("telegram", "telegram_group"):
        return Incoming(channel="telegram", user_key=str(telegram_id), private=channel == "telegram", **fields)
    if channel == "wecom":
        return Incoming(channel="wecom", user_key=WECOM_IDS[role], **fields)
    return Incoming(channel=channel, user_key=code or f"guest-{channel}", **fields)


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("role", list(ROLES))
def test_every_command_for_every_role_on_every_channel(matrix_engine, role, channel):
    failures = []
    for command, (allowed_roles, private_only, _text) in EXPECTED.items():
        if command == "bind" and channel != "telegram_group" and role != "guest":
            continue  # binding is about Telegram accounts: its own tests cover the bound cases
        text = "\n".join(r.text for r in matrix_engine.handle(incoming(role, channel, command)))
        if role not in allowed_roles:
            if role in ("guest", "inactive"):
                ok = any(g in text for g in GUIDANCE)
            elif command == "upload":
                ok = DENIALS["upload"] in text
            elif command == "refer":
                ok = DENIALS["clinical"] in text
            elif command in ("quota", "record_training"):
                ok = DENIALS["coordination"] in text
            else:
                ok = DENIALS["admin"] in text
            expectation = "refused for the role"
        elif private_only and channel == "telegram_group":
            ok = DENIALS["private"] in text
            expectation = "asked to write privately"
        else:
            ok = not any(d in text for d in DENIALS.values())
            if command == "login":
                ok = ok and (("已在网页中登录" in text) if channel == "web" else ("/login/" in text))
            elif command == "bind":
                ok = ok and "绑定码无效" in text if channel == "telegram" else ok
            elif command in DONE:
                ok = ok and DONE[command] in text
            expectation = "done"
        if not ok:
            failures.append(f"{command}: expected {expectation}, got {text[:120]!r}")
    assert not failures, "\n".join(failures)


def test_an_open_dialog_is_never_answered_in_a_group(matrix_engine):
    """An admin's half-finished invite must not print a binding code into a group chat."""
    admin_id = str(ROLES["admin"][1])
    private = matrix_engine.handle(Incoming(channel="telegram", user_key=admin_id, text="/invite"))
    assert "人员代码" in private[0].text
    in_group = matrix_engine.handle(Incoming(channel="telegram", user_key=admin_id, text="dr_wang_sy",
                                             private=False))
    text = "\n".join(r.text for r in in_group)
    assert "绑定码" not in text
    done = matrix_engine.handle(Incoming(channel="telegram", user_key=admin_id, text="dr_wang_sy"))
    assert "绑定码" in done[0].text  # the dialog waited in the private chat


def test_group_refusals_are_audited(matrix_engine, engine_ctx):
    matrix_engine.handle(Incoming(channel="telegram", user_key=str(ROLES["admin"][1]), text="/users", private=False))
    with engine_ctx.sessions() as session:
        entry = repo.audit_entries(session, action="access.denied", limit=1)[0]
    assert entry.actor == "admin_sy" and entry.target == "command:users" and entry.channel == "telegram"
    assert entry.details["reason"] == "private"
