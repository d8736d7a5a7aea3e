"""One-message commands: help/menu, who am I, reminders and quotas, and the admin commands
``人员列表`` (/users), ``角色`` (/role) and ``解绑`` (/unbind).

Each function takes the open session and the caller's ``Identity`` and returns replies, or a
``PolicyLookup`` that the engine answers from the knowledge base after the database transaction
has been committed (retrieval is the slow part; no row lock should be held during it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from handlers.identity import Identity
from handlers.messages import Choice, Reply
from handlers.ports import EngineSettings
from handlers.texts import tr
from storage import access
from storage import repositories as repo
from storage.models import ROLE_LABELS_ZH, ROLES, Staff


@dataclass
class DocumentUpload:
    """Ingest files an admin sent, after the transaction (indexing takes a moment)."""

    attachments: tuple
    uploaded_by: str
    consortium: str | None
    english: bool = False


@dataclass
class DocumentListing:
    """List the indexed policy documents (read after the transaction, like a policy lookup)."""

    consortium: str | None
    english: bool = False


@dataclass
class PolicyLookup:
    """Answer ``question`` from the policies (preferring ``consortium``'s documents)."""

    question: str
    consortium: str | None
    #: Text put before the answer in the same message (e.g. an honest "not available yet").
    intro: str = ""
    choices: tuple[Choice, ...] = field(default_factory=tuple)


EXAMPLE_QUESTIONS = ("上转患者享受哪些优先服务？", "医联体内如何实行双向转诊？", "下派专家到基层坐诊有什么要求？")
EXAMPLE_QUESTIONS_EN = ("What priority do upward referred patients get?",)


# ------------------------------------------------------------------------------------------------
# help / menu


def help_menu(identity: Identity, *, english: bool = False, welcome: bool = False) -> Reply:
    staff = identity.staff
    t = lambda zh, en: tr(english, zh, en)
    lines: list[str] = []
    if welcome:
        lines.append(t("您好，我是医联助手，为医联体成员单位的医务人员提供政策咨询和转诊协助。",
                       "Hello, I am YiLian Assistant. I help consortium staff with policy questions and referrals."))
    if staff is not None:
        lines.append(t(f"当前身份：{staff.name}（{staff.institution.name}，{staff.roles_zh}）",
                       f"You are: {staff.name} ({staff.institution.name})"))
    lines.append(t("我可以帮您：", "What I can do:"))
    lines.append(t("· 政策问答：直接输入问题，例如“上转患者享受哪些优先服务？”。回答引用政策原文并注明出处。",
                   "· Policy questions: just type a question. Answers quote the policy documents with their source."))
    choices: list[Choice] = [Choice(t("政策问答", "Ask a question"), "/ask")]
    if staff is not None:
        lines.append(t("· 转诊：发送“转诊”发起上转/下转；“我的转诊”查看进度；联络员发送“待处理转诊”处理本院收到的转诊；"
                       "发送转诊单号（如 ZD-2026-000001）查看详情。",
                       "· Referrals: /refer to start one; /referrals for yours; /pending for those waiting at your "
                       "institution; send a referral number to see it."))
        lines.append(t("· 会议与配额：“会议”看近期会议并回复参加/请假；联络员、管理员发送“配额”看进修、下派、坐诊完成情况；“提醒”看两者。",
                       "· Meetings and quotas: /meetings to see and answer meeting invitations; liaison officers and "
                       "admins: /quota for training progress; /status for both."))
        lines.append(t("· 查看我的身份：/whoami", "· Who am I: /whoami"))
        if identity.channel != "web":
            lines.append(t("· 网页登录：发送“登录”或 /login，获取一次性登录链接（请在私聊中发送）",
                           "· Web sign-in: send /login for a one-time link (in a private chat)"))
        choices += [Choice(t("发起转诊", "Start a referral"), "/refer"),
                    Choice(t("提醒与配额", "Reminders & quotas"), "/status")]
    if staff is not None and staff.active and staff.has_role("liaison"):
        lines.append(t("· 登记进修、下派、坐诊记录：发送“登记进修”（/record）；也可由管理员用 CSV/Excel 批量导入。",
                       "· Record a training placement, outreach posting or clinic visit: /record."))
    if access.can_manage_users(staff):
        lines.append(t("管理员命令：\n· 邀请 人员代码 —— 生成 Telegram 绑定码（/invite）\n· 人员列表 —— 本医联体人员（/users）\n"
                       "· 角色 人员代码 医生 联络员 —— 修改角色（/role）\n· 解绑 人员代码 —— 解除 Telegram 绑定（/unbind）\n"
                       "· 安排会议 —— 安排联席会议、理事会、例会并通知受邀机构（/newmeeting）\n"
                       "· 出席情况 [会议编号] —— 受邀人员的参加、请假回复（/attendance）\n"
                       "· 直接发送政策文件（PDF、DOCX、TXT、MD）即可收录；同名文件自动替换旧版本",
                       "Admin commands:\n· /invite STAFF_CODE — create a Telegram binding code\n· /users — staff of your "
                       "consortium\n· /role STAFF_CODE physician liaison — change roles\n· /unbind STAFF_CODE — remove a "
                       "Telegram binding\n· /newmeeting — schedule a meeting\n· /attendance [ID] — who answered\n· send a policy file (PDF, DOCX, TXT, MD) to index it; a file with the same "
                       "title replaces the old version"))
        choices += [Choice(t("邀请人员", "Invite staff"), "/invite"), Choice(t("人员列表", "Staff list"), "/users")]
    if staff is None:
        if identity.channel == "telegram":
            lines.append(t("· 绑定身份：发送 /bind 绑定码（绑定码向本医联体管理员索取）。绑定后可使用转诊、提醒等功能。",
                           "· Bind your account: send /bind CODE (ask your administrator for a code) to unlock "
                           "referrals and reminders."))
            choices.append(Choice(t("绑定身份", "Bind account"), "/bind"))
        elif identity.channel == "wecom":
            lines.append(t("· 转诊、提醒等功能需要管理员先把您的企业微信账号加入人员名录。",
                           "· Referrals and reminders need your administrator to add your WeCom userid to the directory."))
        else:
            lines.append(t("· 您是未绑定访客；选择一个示例人员身份即可体验转诊等功能。",
                           "· You are an unbound visitor; pick a sample staff identity to try referrals."))
    lines.append(t("随时发送“取消”退出当前操作，发送“帮助”查看本菜单。",
                   "Send \"cancel\" to leave any action, \"help\" to see this menu."))
    return Reply("\n".join(lines), choices=tuple(choices))


def ask_prompt(*, english: bool = False) -> Reply:
    if english:
        return Reply("Type your policy question, for example: " + EXAMPLE_QUESTIONS_EN[0],
                     choices=tuple(Choice(q, f"/ask {q}") for q in EXAMPLE_QUESTIONS_EN))
    return Reply("请直接输入您的政策问题，例如：\n" + "\n".join(f"· {q}" for q in EXAMPLE_QUESTIONS),
                 choices=tuple(Choice(q, f"/ask {q}") for q in EXAMPLE_QUESTIONS))


def whoami(identity: Identity, *, english: bool = False) -> Reply:
    staff = identity.staff
    if staff is None:
        return Reply(tr(english, "您当前未绑定医联体人员身份。", "You are not bound to a staff member."))
    inst = staff.institution
    bindings = []
    if staff.wecom_userid:
        bindings.append(tr(english, "企业微信已登记", "WeCom registered"))
    if staff.telegram_user_id:
        bindings.append(tr(english, "Telegram 已绑定", "Telegram bound"))
    return Reply(tr(
        english,
        f"{staff.name}（人员代码 {staff.code}）\n机构：{inst.name}（{inst.level}）\n医联体：{inst.consortium.name}\n"
        f"角色：{staff.roles_zh}" + (f"\n科室：{staff.department}" if staff.department else "")
        + (f"\n账号：{'、'.join(bindings)}" if bindings else ""),
        f"{staff.name} (code {staff.code})\nInstitution: {inst.name} ({inst.level})\nConsortium: {inst.consortium.name}\n"
        f"Roles: {', '.join(staff.roles)}" + (f"\nAccounts: {', '.join(bindings)}" if bindings else ""),
    ))


def login_link(session: Session, identity: Identity, settings: EngineSettings, *, english: bool = False) -> Reply:
    """A one-time link that signs this staff member in to the web pages (asked for in a private chat).

    The link is the only copy of the token (the database keeps its hash); it works once, for a
    few minutes, and only opens a confirmation page until the person presses 登录 — so a chat
    app's link preview cannot use it up.
    """
    from datetime import timedelta

    from storage import signin

    staff = identity.staff
    assert staff is not None  # the engine checked the command's audience
    if identity.channel == "web":
        return Reply(tr(english, "您已在网页中登录。", "You are already signed in on the web."))
    minutes = settings.login_link_ttl_minutes
    token = signin.create_login_token(session, staff, via=identity.channel, ttl=timedelta(minutes=minutes))
    url = f"{settings.web_base_url.rstrip('/')}/login/{token}"
    return Reply(tr(
        english,
        f"网页登录链接（{minutes} 分钟内有效，只能使用一次，请勿转发）：\n{url}\n在浏览器中打开后点击“登录”。",
        f"Your sign-in link (valid for {minutes} minutes, works once, do not forward it):\n{url}\n"
        "Open it in a browser and press “Sign in”.",
    ))


def document_list(documents: list, consortium: str | None, *, english: bool = False) -> Reply:
    """The policy documents one can ask about, the asker's own consortium's first."""
    if not documents:
        return Reply(tr(english, "知识库中还没有政策文件。请联系管理员上传。",
                        "No policy documents are indexed yet. Please ask an administrator to upload them."))
    ordered = sorted(documents, key=lambda d: (d.consortium != consortium if consortium else False, d.title))
    lines = [tr(english, f"已收录 {len(documents)} 份政策文件：", f"{len(documents)} policy documents are indexed:")]
    for d in ordered:
        own = tr(english, "（本医联体）", " (your consortium)") if consortium and d.consortium == consortium else ""
        date = d.updated_at.strftime("%Y-%m-%d")
        lines.append(tr(english, f"· 《{d.title}》第 {d.version} 版，{date} 更新{own}",
                        f"· 《{d.title}》 version {d.version}, updated {date}{own}"))
    lines.append(tr(english, "直接输入问题即可查询这些文件中的规定。", "Ask a question to search them."))
    return Reply("\n".join(lines))


# ------------------------------------------------------------------------------------------------
# reminders / quotas


_STATUS_TOPICS = (
    ("进修", "进修人员 进修培训 要求", "training placements (进修)"),
    ("下派", "下派人员 到基层工作时间 要求", "outreach postings (下派)"),
    ("坐诊", "专家 坐诊 对口支援", "visiting clinics (坐诊)"),
)


def status(identity: Identity, text: str, *, english: bool = False) -> PolicyLookup:
    """For physicians: training placements are recorded per institution by its liaison officer,
    so what we can honestly show a physician is the policies' own rules on 进修/下派/坐诊."""
    topic = next((t for t in _STATUS_TOPICS if t[0] in text), None)
    question = topic[1] if topic else "下派人员 进修培训 坐诊 要求"
    what_zh = f"“{topic[0]}”" if topic else "进修、下派、坐诊"
    what_en = topic[2] if topic else "training placements, outreach postings and visiting clinics"
    intro = tr(
        english,
        f"进修、下派、坐诊记录由本院联络员登记，完成情况由联络员和管理员查看（发送“配额”）；会议提醒会直接发给您。"
        f"以下是政策文件中关于{what_zh}的相关规定：\n\n",
        f"Training, outreach and clinic records are kept per institution by its liaison officer, who (with the "
        f"admins) sees the quota progress; meeting reminders come to you directly. "
        f"Here is what the policy documents say about {what_en}:\n\n",
    )
    return PolicyLookup(question=question, consortium=identity.consortium_code, intro=intro)


# ------------------------------------------------------------------------------------------------
# admin commands (the engine has checked ``access.can_manage_users`` already)


def list_users(session: Session, identity: Identity, *, english: bool = False) -> Reply:
    admin = identity.staff
    assert admin is not None
    consortium = admin.institution.consortium
    people = repo.list_staff(session, consortium_id=consortium.id, active_only=False)
    lines = [tr(english, f"{consortium.name}：共 {len(people)} 人", f"{consortium.name}: {len(people)} staff")]
    by_inst: dict[str, list[Staff]] = {}
    for s in people:
        by_inst.setdefault(s.institution.name, []).append(s)
    for inst_name, members in by_inst.items():
        lines.append(f"【{inst_name}】")
        for s in members:
            marks = []
            if s.wecom_userid:
                marks.append(tr(english, "企业微信", "WeCom"))
            if s.telegram_user_id:
                marks.append(tr(english, "Telegram已绑定", "Telegram bound"))
            if not s.active:
                marks.append(tr(english, "已停用", "inactive"))
            extra = f"（{'、'.join(marks)}）" if marks else ""
            dept = f" · {s.department}" if s.department else ""
            lines.append(f"· {s.code}  {s.name} — {s.roles_zh}{dept}{extra}")
    lines.append(tr(english, "邀请：发送“邀请 人员代码”。", "Invite: /invite STAFF_CODE"))
    return Reply("\n".join(lines))


_ROLE_WORDS = {
    "physician": "physician", "doctor": "physician", "医生": "physician", "医师": "physician",
    "liaison": "liaison", "联络员": "liaison",
    "admin": "admin", "administrator": "admin", "管理员": "admin",
}


def _target(session: Session, identity: Identity, code: str, english: bool) -> Staff | Reply:
    target = repo.get_staff_by_code(session, code, active_only=False)
    if target is None:
        return Reply(tr(english, f"人员名录中没有代码为“{code}”的人员。发送“人员列表”查看。",
                        f"No staff member has the code \"{code}\". Send /users to list them."))
    if not access.can_manage_staff_member(identity.staff, target):
        return Reply(tr(english, "抱歉，您只能管理本医联体的人员。", "Sorry, you can only manage staff of your own consortium."))
    return target


def change_roles(session: Session, identity: Identity, arg: str, *, english: bool = False) -> Reply:
    usage = tr(english, "用法：角色 人员代码 医生 联络员 管理员（列出全部新角色，例如：角色 dr_wang_sy 医生 联络员）",
               "Usage: /role STAFF_CODE physician liaison admin (list all the new roles)")
    words = [w for w in re.split(r"[\s,;，；、]+", arg.strip()) if w]
    if not words:
        return Reply(usage)
    found = _target(session, identity, words[0], english)
    if isinstance(found, Reply):
        return found
    target = found
    if len(words) == 1:
        return Reply(tr(english, f"{target.name}（{target.code}）当前角色：{target.roles_zh}。\n{usage}",
                        f"{target.name} ({target.code}) has roles: {', '.join(target.roles)}.\n{usage}"))
    roles: set[str] = set()
    for w in words[1:]:
        role = _ROLE_WORDS.get(w.lower())
        if role is None:
            return Reply(tr(english, f"“{w}”不是有效的角色。可选：医生、联络员、管理员。\n{usage}",
                            f"\"{w}\" is not a role. Roles: physician, liaison, admin.\n{usage}"))
        roles.add(role)
    new = [r for r in ROLES if r in roles]
    admin = identity.staff
    assert admin is not None
    if target.id == admin.id and "admin" not in new:
        return Reply(tr(english, "不能取消您自己的管理员角色，请由本医联体的另一位管理员操作。",
                        "You cannot remove your own admin role; ask another administrator of your consortium."))
    old_zh = target.roles_zh
    if not repo.set_roles(session, target, new, actor=admin.code):  # audited as role_change
        return Reply(tr(english, f"{target.name} 的角色本来就是：{old_zh}，未作更改。",
                        f"{target.name} already has exactly these roles; nothing changed."))
    new_zh = "、".join(ROLE_LABELS_ZH[r] for r in new)
    return Reply(tr(english, f"已将 {target.name}（{target.code}）的角色由“{old_zh}”改为“{new_zh}”。",
                    f"Roles of {target.name} ({target.code}) changed to: {', '.join(new)}."))


def unbind(session: Session, identity: Identity, arg: str, *, english: bool = False) -> Reply:
    code = arg.strip().split()[0] if arg.strip() else ""
    if not code:
        return Reply(tr(english, "用法：解绑 人员代码（解除该人员的 Telegram 绑定，例如手机丢失时）",
                        "Usage: /unbind STAFF_CODE (removes their Telegram binding, e.g. after a lost phone)"))
    found = _target(session, identity, code, english)
    if isinstance(found, Reply):
        return found
    admin = identity.staff
    assert admin is not None
    if not repo.unbind_telegram(session, found, actor=admin.code):  # audited as unbind
        return Reply(tr(english, f"{found.name}（{found.code}）没有绑定 Telegram 账号，无需解绑。",
                        f"{found.name} ({found.code}) has no Telegram binding."))
    # Unbinding is the remedy for a lost phone: whoever holds it may have asked for /login links
    # and signed in to the web with them. End those sessions and links too (audited as logout).
    from storage import signin

    signin.revoke_staff_sessions(session, found, actor=admin.code)
    return Reply(tr(english, f"已解除 {found.name}（{found.code}）的 Telegram 绑定，其网页登录和未使用的登录链接也已失效。"
                             f"如需重新绑定，请发送“邀请 {found.code}”生成新的绑定码。",
                    f"Removed the Telegram binding of {found.name} ({found.code}) and ended their web sessions and "
                    f"unused sign-in links. Send /invite {found.code} for a new code."))


__all__ = ["DocumentListing", "PolicyLookup", "ask_prompt", "document_list", "change_roles", "help_menu", "list_users", "login_link", "status", "unbind",
           "whoami"]
