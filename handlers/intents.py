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
    STATUS = "status"  # reminders / quotas (进修、下派、坐诊): meetings, progress, the policies' rules
    QUOTA = "quota"  # training-quota progress: the liaison's institution, an admin's consortium
    MEETINGS = "meetings"  # upcoming meetings the user's institution is invited to
    ATTENDANCE = "attendance"  # admin: who answered 参加 / 请假 for a meeting
    RECORD_TRAINING = "record_training"  # liaison/admin: record a 进修 / 下派 / 坐诊 placement
    NEW_MEETING = "new_meeting"  # admin: schedule a meeting
    WHOAMI = "whoami"
    LOGIN = "login"  # a one-time link that signs the user in to the web pages
    DOCS = "docs"  # the list of indexed policy documents
    MY_REFERRALS = "my_referrals"  # the user's own referrals
    PENDING_REFERRALS = "pending_referrals"  # referrals waiting for the user's institution
    REFERRAL_VIEW = "referral_view"  # one referral by its number (ZD-2026-000123)
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
    "status": IntentKind.STATUS, "reminders": IntentKind.STATUS, "quota": IntentKind.QUOTA,
    "quotas": IntentKind.QUOTA, "meetings": IntentKind.MEETINGS, "meeting": IntentKind.MEETINGS,
    "attendance": IntentKind.ATTENDANCE, "rsvp": IntentKind.ATTENDANCE,
    "record": IntentKind.RECORD_TRAINING, "newmeeting": IntentKind.NEW_MEETING,
    "whoami": IntentKind.WHOAMI, "me": IntentKind.WHOAMI,
    "login": IntentKind.LOGIN, "signin": IntentKind.LOGIN,
    "invite": IntentKind.INVITE,
    "users": IntentKind.USERS,
    "role": IntentKind.ROLE, "roles": IntentKind.ROLE,
    "unbind": IntentKind.UNBIND,
    "docs": IntentKind.DOCS, "documents": IntentKind.DOCS, "policies": IntentKind.DOCS,
    "referrals": IntentKind.MY_REFERRALS, "myreferrals": IntentKind.MY_REFERRALS,
    "pending": IntentKind.PENDING_REFERRALS, "queue": IntentKind.PENDING_REFERRALS,
    "show": IntentKind.REFERRAL_VIEW,
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
    "提醒": IntentKind.STATUS, "我的提醒": IntentKind.STATUS, "配额": IntentKind.QUOTA,
    "名额": IntentKind.QUOTA, "进修": IntentKind.STATUS, "下派": IntentKind.STATUS,
    "坐诊": IntentKind.STATUS, "进修名额": IntentKind.QUOTA, "下派名额": IntentKind.QUOTA,
    "提醒配额": IntentKind.STATUS, "配额查询": IntentKind.QUOTA,
    "会议": IntentKind.MEETINGS, "会议安排": IntentKind.MEETINGS, "我的会议": IntentKind.MEETINGS,
    "近期会议": IntentKind.MEETINGS, "会议通知": IntentKind.MEETINGS,
    "出席情况": IntentKind.ATTENDANCE, "参会情况": IntentKind.ATTENDANCE, "参会名单": IntentKind.ATTENDANCE,
    "出席名单": IntentKind.ATTENDANCE, "回复情况": IntentKind.ATTENDANCE,
    "登记进修": IntentKind.RECORD_TRAINING, "登记下派": IntentKind.RECORD_TRAINING,
    "安排会议": IntentKind.NEW_MEETING, "新建会议": IntentKind.NEW_MEETING, "创建会议": IntentKind.NEW_MEETING,
    "发起会议": IntentKind.NEW_MEETING, "会议登记": IntentKind.NEW_MEETING,
    "登记坐诊": IntentKind.RECORD_TRAINING, "培训登记": IntentKind.RECORD_TRAINING,
    "登记培训": IntentKind.RECORD_TRAINING, "进修登记": IntentKind.RECORD_TRAINING,
    "下派登记": IntentKind.RECORD_TRAINING, "坐诊登记": IntentKind.RECORD_TRAINING,
    "我的转诊": IntentKind.MY_REFERRALS, "待处理转诊": IntentKind.PENDING_REFERRALS,
    "待接收转诊": IntentKind.PENDING_REFERRALS, "转诊待办": IntentKind.PENDING_REFERRALS,
    "待办转诊": IntentKind.PENDING_REFERRALS, "待处理": IntentKind.PENDING_REFERRALS,
    "我是谁": IntentKind.WHOAMI, "我的身份": IntentKind.WHOAMI,
    "登录": IntentKind.LOGIN, "网页登录": IntentKind.LOGIN, "登录网页": IntentKind.LOGIN, "登陆": IntentKind.LOGIN,
    "人员列表": IntentKind.USERS, "用户列表": IntentKind.USERS,
    "邀请": IntentKind.INVITE,
    # English words typed without a slash
    "ask": IntentKind.ASK,
    "refer": IntentKind.REFER, "referral": IntentKind.REFER,
    "cancel": IntentKind.CANCEL, "quit": IntentKind.CANCEL,
    "help": IntentKind.HELP, "menu": IntentKind.HELP,
    "bind": IntentKind.BIND, "login": IntentKind.LOGIN, "reminders": IntentKind.STATUS, "quota": IntentKind.QUOTA,
    "quotas": IntentKind.QUOTA, "meetings": IntentKind.MEETINGS,
}
# Keywords that take an argument after a space: ``绑定 ABCD2345``, ``邀请 dr_wang_sy``.
_KEYWORDS_WITH_ARG: dict[str, IntentKind] = {
    "绑定": IntentKind.BIND, "邀请": IntentKind.INVITE, "角色": IntentKind.ROLE, "解绑": IntentKind.UNBIND,
    "出席情况": IntentKind.ATTENDANCE, "参会情况": IntentKind.ATTENDANCE,
    "bind": IntentKind.BIND, "invite": IntentKind.INVITE,
}
_ENGLISH_KEYWORDS = frozenset(k for k in [*_KEYWORDS, *_KEYWORDS_WITH_ARG] if k.isascii() and k.isalpha())

#: A referral number typed alone or after 查看/转诊: ``ZD-2026-000123``, ``查看 zd-2026-000123``.
REFERRAL_NUMBER_RE = re.compile(r"^(?:查看|查询|转诊单?|转诊号|单号|show)?[\s:：]*([A-Za-z]{2,4}-\d{4}-\d{6})$",
                                re.IGNORECASE)
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
    number = REFERRAL_NUMBER_RE.match(bare)
    if number:
        return Intent(IntentKind.REFERRAL_VIEW, arg=number.group(1).upper(), explicit=True)
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
    request = _request_in_words(bare)
    if request is not None:
        return Intent(request, explicit=True, english=is_latin(raw))
    return Intent(IntentKind.ASK, arg=raw, explicit=False, english=is_latin(raw))


# ------------------------------------------------------------------------------------------------
# Requests in the user's own words ("帮我发起个转诊", "你能干啥", "有哪些政策文件？", "我的转诊记录").
#
# A message is such a request when it names the thing (an anchor) and *nothing else of substance*:
# every other word is request vocabulary (verbs of asking, pronouns, measure words, fillers).
# "转诊需要什么条件？" keeps "需要…条件" and so stays a policy question; "帮我发起个转诊" leaves nothing.
# The vocabularies are word classes of the register, not phrases of known questions.

_FILLERS = ("请问", "请", "麻烦", "帮我", "帮忙", "给我", "我要", "我想", "想要", "我需要", "需要", "能不能", "可以",
            "一下", "一个", "个", "下", "吧", "啊", "呀", "呢", "嘛", "哈", "了", "的", "吗", "么", "我", "你", "您",
            "咱们", "我们", "现在", "目前", "都", "有", "看", "看看", "查", "查看", "查询", "显示", "列出", "告诉",
            "系统", "这里", "里", "上", "中", "一共", "全部", "所有")
_EN_FILLERS = ("please", "can", "could", "you", "i", "me", "my", "want", "to", "would", "like", "a", "an", "the",
               "new", "show", "list", "all", "do", "have", "what", "which", "are", "is", "there", "of", "for", "see")


@dataclass(frozen=True)
class _Request:
    kind: IntentKind
    anchors: tuple[str, ...]  # at least one must be present
    words: tuple[str, ...]  # may be present besides the fillers
    en_anchors: tuple[str, ...] = ()
    en_words: tuple[str, ...] = ()


_REQUESTS: tuple[_Request, ...] = (
    _Request(IntentKind.MY_REFERRALS, anchors=("转诊记录", "转诊单", "转诊列表", "转诊进度", "转诊状态", "转诊情况",
                                               "转过的病人", "转出的病人", "转的病人"),
             words=("我的", "我发起的", "我提交的", "我转的", "本人", "最近", "历史", "记录", "进度", "状态", "情况"),
             en_anchors=("referrals",), en_words=("my", "status", "recent")),
    # "我院进修完成情况", "咱们下派任务完成得咋样": progress, not the policy's wording.
    _Request(IntentKind.QUOTA, anchors=("配额", "名额", "完成情况", "完成进度", "完成得", "完成了多少", "进度"),
             words=("我院", "本院", "我们医院", "咱们医院", "我们院", "院里", "今年", "本年度", "本年", "本月", "本季度",
                    "进修", "下派", "坐诊", "指导", "培训", "任务", "人员", "情况", "怎么样", "咋样", "如何", "多少",
                    "还差", "剩余", "剩下"),
             en_anchors=("quota", "quotas", "progress"), en_words=("training", "our", "hospital", "status")),
    _Request(IntentKind.MEETINGS, anchors=("会议安排", "开会安排", "会议通知", "近期会议", "最近的会", "会议"),
             words=("近期", "最近", "下次", "下一次", "接下来", "哪些", "什么", "啥", "时候", "我的", "我院", "本院",
                    "要参加", "参加", "通知", "安排"),
             en_anchors=("meetings", "meeting"), en_words=("upcoming", "next", "our")),
    _Request(IntentKind.REFER, anchors=("转诊",),
             words=("发起", "开始", "新建", "办理", "办", "做", "开", "申请", "提交", "登记", "填", "填写", "转个", "转",
                    "病人", "患者", "一位", "一名", "新的", "单", "给", "为"),
             en_anchors=("referral", "refer"), en_words=("start", "make", "begin", "create", "patient", "new")),
    _Request(IntentKind.DOCS, anchors=("文件", "政策", "制度", "文档", "方案", "规定", "资料"),
             words=("哪些", "哪几个", "什么", "啥", "收录", "录入", "上传", "已", "已经", "列表", "清单", "目录", "名单",
                    "知识库", "几份", "多少份", "多少", "几个", "能查", "可查"),
             en_anchors=("documents", "policies", "documents?", "policies?"),
             en_words=("indexed", "available", "which", "loaded", "knowledge", "base", "policy")),
    _Request(IntentKind.HELP, anchors=("能干啥", "能做什么", "能干什么", "会什么", "会干啥", "能帮我什么", "有什么功能",
                                       "有哪些功能", "怎么用", "如何使用", "使用方法", "功能"),
             words=("你", "都", "还", "可以"),
             en_anchors=("help", "capabilities", "features", "do", "use"),
             en_words=("what", "can", "how", "this", "bot", "assistant", "else")),
)
_PUNCT_RE = re.compile(r"[\s，,。.!！?？~～、；;：:…\-—'\"“”‘’()（）]+")


def _residual(text: str, vocabulary: tuple[str, ...]) -> str:
    for word in sorted(vocabulary, key=len, reverse=True):
        text = text.replace(word, " ")
    return _PUNCT_RE.sub("", text)


def _request_in_words(text: str) -> IntentKind | None:
    """The feature a short free-text request asks for, or None (a policy question)."""
    text = text.strip()
    if not text or len(text) > 40:
        return None
    if is_latin(text):
        words = [w for w in re.split(r"[^a-z]+", text.lower()) if w]
        for req in _REQUESTS:
            if any(w in req.en_anchors or w.rstrip("s") in req.en_anchors for w in words) and \
                    all(w in req.en_anchors or w in req.en_words or w in _EN_FILLERS for w in words):
                return req.kind
        return None
    for req in _REQUESTS:
        if any(a in text for a in req.anchors) and not _residual(text, req.anchors + req.words + _FILLERS):
            return req.kind
    return None


_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{2,50}$")
_ROLE_ARG_RE = re.compile(r"^[A-Za-z0-9_\-]{2,50}(?:[\s,;，；、]+[A-Za-z\u4e00-\u9fff]{2,15}){0,4}$")


def _looks_like_argument(kind: IntentKind, rest: str) -> bool:
    """``绑定 ABCD2345`` is a command; ``invite a colleague to the meeting`` is a question."""
    if kind == IntentKind.ROLE:
        return bool(_ROLE_ARG_RE.match(rest))
    if kind == IntentKind.ATTENDANCE:  # a meeting's id or title
        return 0 < len(rest) <= 200
    return bool(_TOKEN_RE.match(rest))


__all__ = ["REFERRAL_NUMBER_RE", "Intent", "IntentKind", "route"]
