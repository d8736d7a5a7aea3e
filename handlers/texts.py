"""Shared user-facing wording (Simplified Chinese, English when the user writes English)."""

from __future__ import annotations


def tr(english: bool, zh: str, en: str) -> str:
    """Pick the wording for the user's language."""
    return en if english else zh


CANCEL_HINT = ("（发送“取消”可随时退出）", "(send \"cancel\" to stop at any time)")
CANCELLED = ("已取消{title}。需要时可随时重新开始；发送“帮助”查看全部功能。",
             "{title} cancelled. Start again whenever you like; send \"help\" to see what I can do.")
NOTHING_TO_CANCEL = ("当前没有进行中的操作，无需取消。发送“帮助”查看全部功能。",
                     "There is nothing to cancel. Send \"help\" to see what I can do.")
EXPIRED = ("您之前的{title}已超过 {minutes} 分钟未继续，已自动结束。如需继续，请重新开始{restart}。",
           ("Your earlier {title} was idle for more than {minutes} minutes and has expired. "
            "Please start again{restart}."))
STALE_BUTTON = ("这个按钮对应的操作已经结束或已过期。需要时请重新开始；发送“帮助”查看全部功能。",
                ("That button belongs to an action that has already ended or expired. "
                 "Please start again; send \"help\" to see what I can do."))
ABANDONED = ("已结束之前未完成的{title}。", "Your unfinished {title} was closed.")
ERROR = ("抱歉，处理您的消息时出现了问题，请稍后再试。如果一直出现，请联系管理员。",
         ("Sorry, something went wrong while handling your message. Please try again later, "
          "or contact your administrator if it keeps happening."))
IN_DIALOG = ("您正在进行{title}。请回答下面的问题，或发送“取消”退出。",
             "You are in the middle of a {title}. Answer the question below, or send \"cancel\" to stop.")
ADMIN_ONLY = ("抱歉，只有管理员可以管理人员、角色和邀请码。",
              "Sorry, only administrators can manage staff, roles and invite codes.")
COORDINATION_ONLY = ("抱歉，培训配额的查看和登记只有联络员和管理员可以使用。",
                     "Sorry, only liaison officers and admins can see or record training quotas.")
CLINICAL_ONLY = ("抱歉，只有已绑定的医生或联络员可以发起转诊。",
                 "Sorry, only bound physicians and liaison officers can start a referral.")
PRIVATE_ONLY = ("这条命令的回复涉及个人或管理信息，群里的其他人也能看到，请私聊我后再发送（点击我的头像 → 发消息）。",
                ("The answer to that command is personal or administrative and everyone in this group would "
                 "see it. Please send it to me in a private chat."))
DIALOG_IN_PRIVATE = ("您有一项{title}正在私聊中进行，请回到与我的私聊中继续。",
                     "You have a {title} open in our private chat; please continue it there.")
UNKNOWN_COMMAND = ("没有“/{command}”这个命令。发送 /help 查看可用的命令。",
                   "There is no command \"/{command}\". Send /help to see the available commands.")
EMPTY_MESSAGE = ("请输入文字消息，例如一个政策问题；发送“帮助”查看全部功能。",
                 "Please send a text message, for example a policy question; send \"help\" to see what I can do.")
UPLOAD_ADMIN_ONLY = (
    "只有管理员可以上传政策文件。如需更新政策文件，请联系本医联体管理员；如有问题，请直接输入文字提问。",
    "Only admins can upload policy documents. Please ask your consortium's admin, or type your question.",
)
UPLOAD_ADDED = ("✓ 已收录《{title}》（第 {version} 版，{chunks} 条条款），现在即可提问。",
                "✓ Added “{title}” (version {version}, {chunks} clauses); you can ask about it now.")
UPLOAD_UPDATED = ("✓ 已更新《{title}》为第 {version} 版（{chunks} 条条款），旧版本已不再使用。",
                  "✓ Updated “{title}” to version {version} ({chunks} clauses); the old version is no longer used.")
UPLOAD_UNCHANGED = ("《{title}》内容与已收录版本（第 {version} 版）相同，无需更新。",
                    "“{title}” is the same as the indexed version {version}; nothing to update.")
UPLOAD_FAILED = ("✗ {file}：{reason}。知识库未作改动。",
                 "✗ {file}: {reason}. The knowledge base was not changed.")


def pick(pair: tuple[str, str], english: bool, **fmt: object) -> str:
    text = pair[1] if english else pair[0]
    return text.format(**fmt) if fmt else text


__all__ = ["pick", "tr"]
