"""The conversation engine every channel shares.

``ConversationEngine(ctx).handle(Incoming) -> list[Reply]`` is synchronous and thread-safe:
async adapters call it with ``asyncio.to_thread``. Each call runs in its own database transaction;
nothing about a user is kept in process memory, so any number of workers (or a restarted process)
can serve the same user. Policy questions are answered from the knowledge base *after* that
transaction is committed.

Order of decisions for one message:

1. resolve the user (``handlers.identity``) and load their open dialog (``get_dialog``);
2. a dialog that timed out is announced once (``DialogExpired``); the last policy answer's context
   (``handlers.followup``) shares the dialog row but is no dialog: it is set aside here, never
   announced, and only a private chat's typed question uses it;
3. a button of a dialog goes to that dialog (or is answered as stale);
4. the text is routed (``handlers.intents.route``): ``取消`` ends the open dialog, ``帮助`` inside a
   dialog repeats its question, another command replaces the dialog, anything else answers it;
5. without a dialog: unbound users get policy answers and guidance only; admin commands are
   checked with ``storage.access``; everything else is dispatched to a command or a dialog.

Replies are finally cut to the channel's size limit (``handlers.replies``).

Follow-ups ("那理事会呢？", "第二条出自哪里？", "还有呢？") are understood in ``_resolve`` with the
context of the user's last answer (``handlers.followup``); after each policy answer in a private
chat that context is stored in its own short transaction, unless a real dialog took the row.
Group chats neither use nor store it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from handlers import commands, dialogs, followup, meeting_service, quota_service
from handlers.dialogs.base import Turn, Update, decode_choice
from handlers.identity import Identity, access_guidance, resolve
from handlers.intents import Intent, IntentKind, route
from handlers.messages import Incoming, Reply
from handlers.meetings import CHINA_TZ
from handlers.referral import service as referral_service
from handlers.ports import EngineContext
from handlers.replies import Limit, fit_replies
from handlers.texts import (
    ABANDONED,
    ADMIN_ONLY,
    CANCELLED,
    CLINICAL_ONLY,
    COORDINATION_ONLY,
    DIALOG_IN_PRIVATE,
    EMPTY_MESSAGE,
    ERROR,
    EXPIRED,
    IN_DIALOG,
    NOTHING_TO_CANCEL,
    PRIVATE_ONLY,
    STALE_BUTTON,
    UNKNOWN_COMMAND,
    UPLOAD_ADDED,
    UPLOAD_ADMIN_ONLY,
    UPLOAD_FAILED,
    UPLOAD_UNCHANGED,
    UPLOAD_UPDATED,
    pick,
)
from knowledge.textnorm import is_mostly_latin
from storage import access
from storage import repositories as repo
from storage.repositories import Dialog as DialogState
from storage.repositories import DialogExpired
from storage.types import utcnow

log = logging.getLogger(__name__)

#: Longest text accepted from a user; longer messages are cut (a policy question is short).
MAX_TEXT_CHARS = 2000

Item = Reply | commands.PolicyLookup | commands.DocumentUpload | commands.DocumentListing


@dataclass
class _Question(commands.PolicyLookup):
    """A typed policy question, with the context of the asker's last answer (private chats)."""

    context: dict | None = None


def _local_day(now: datetime):
    return now.astimezone(CHINA_TZ).date()


class ConversationEngine:
    def __init__(
        self,
        ctx: EngineContext,
        *,
        kb: Any | None = None,
        clock: Callable[[], datetime] = utcnow,
        limits: dict[str, Limit | None] | None = None,
    ) -> None:
        """``kb`` overrides ``ctx.kb`` (tests share one); ``clock`` returns aware UTC now;
        ``limits`` overrides per-channel message limits (``handlers.replies.CHANNEL_LIMITS``)."""
        self._ctx = ctx
        self._kb = kb
        self._kb_lock = threading.Lock()
        self._clock = clock
        self._limits = limits

    # ------------------------------------------------------------------------------------------
    # public API

    @property
    def ctx(self) -> EngineContext:
        return self._ctx

    @property
    def kb(self) -> Any:
        """The knowledge base, created on first use (loading the embedder takes a moment)."""
        if self._kb is None:
            with self._kb_lock:
                if self._kb is None:
                    self._kb = self._ctx.kb
        return self._kb

    def handle(self, msg: Incoming) -> list[Reply]:
        """Answer one user action. Never raises: an internal error becomes a polite reply."""
        english = is_mostly_latin(msg.text or "")
        try:
            with repo.audit_origin(msg.channel, msg.client_address):
                items = self._handle_in_transaction(msg)
            replies: list[Reply] = []
            for item in items:
                if isinstance(item, commands.PolicyLookup):
                    replies.extend(self._resolve(item, msg))
                elif isinstance(item, commands.DocumentUpload):
                    replies.extend(self._ingest(item))
                elif isinstance(item, commands.DocumentListing):
                    replies.append(commands.document_list(self.kb.documents(), item.consortium,
                                                          english=item.english))
                else:
                    replies.append(item)
        except Exception:
            log.exception("engine failed", extra={"channel": msg.channel, "external_id": msg.external_id})
            replies = [Reply(pick(ERROR, english))]
        return fit_replies(replies, msg.channel, self._limits)

    def warm_up(self) -> None:
        """Load the knowledge base, its encoder and the per-snapshot indexes (homophones, the
        English dictionary) now, so that the first questions are fast."""
        self.kb.retrieve("医联体 双向转诊")
        self.kb.retrieve("Which hospitals take part in two-way referral?")

    def knowledge_status(self) -> tuple[bool, str | None]:
        """(ready, reason): ready when the knowledge base is loaded and has documents."""
        if self._kb is None:
            return False, "knowledge base is still loading"
        if not self._kb.snapshot().chunks:
            return False, "knowledge base has no documents (run `yilian bootstrap` or `yilian ingest`)"
        return True, None

    def degraded(self) -> str | None:
        """Why answers are degraded right now (e.g. the vector index is down), or None."""
        return getattr(self._kb, "degraded", None) if self._kb is not None else None

    def database_status(self) -> tuple[bool, str | None]:
        try:
            with self._ctx.engine.connect() as conn:
                conn.execute(sql_text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return False, f"database unreachable: {type(exc).__name__}"
        return True, None

    # ------------------------------------------------------------------------------------------
    # one message

    def _handle_in_transaction(self, msg: Incoming) -> list[Item]:
        now = self._clock()
        with self._ctx.sessions.begin() as session:
            identity = resolve(session, msg.channel, msg.user_key)
            if identity.staff is not None and msg.private and identity.staff.last_channel != msg.channel \
                    and msg.channel != "cli":
                identity.staff.last_channel = msg.channel  # their notifications go here first
            state = repo.get_dialog(session, msg.channel, msg.user_key, now=now)
            return self._dispatch(session, identity, state, msg, now)

    def _turn(self, session: Session, identity: Identity, now: datetime, text: str = "",
              choice: str | None = None, english: bool = False, attachments: tuple = ()) -> Turn:
        return Turn(session=session, identity=identity, settings=self._ctx.settings, now=now,
                    text=text, choice=choice, english=english, channel=identity.channel,
                    user_key=identity.user_key, attachments=attachments, router=self.router)

    @property
    def router(self) -> Any:
        """Queues notifications for other staff's chat channels (``bot.notify``); None: the web
        inbox only."""
        return getattr(self._ctx, "router", None)

    def _dispatch(self, session: Session, identity: Identity, state: DialogState | DialogExpired | None,
                  msg: Incoming, now: datetime) -> list[Item]:
        context = None
        if state is not None and state.dialog == followup.CONTEXT_DIALOG:
            # The last answer's context, not a dialog: never announced, never in the way.
            if isinstance(state, DialogState) and msg.private:
                context = state.data
            state = None
        if not msg.private and state is not None:
            # Dialogs are personal (codes, patients, staff): a group message never answers one,
            # and an open one is neither shown nor closed here.
            if msg.choice is not None and decode_choice(msg.choice) is not None:
                title = dialogs.get(state.dialog)
                english = state.data.get("_lang") == "en"
                return [Reply(pick(DIALOG_IN_PRIVATE, english,
                                   title=title.title_for(english) if title else pick(("操作", "action"), english)))]
            state = None
        expired = state if isinstance(state, DialogExpired) else None
        open_state = state if isinstance(state, DialogState) else None
        text = (msg.text or "").strip()[:MAX_TEXT_CHARS]

        # -- buttons
        if msg.choice is not None and referral_service.decode_action(msg.choice) is not None:
            denied = self._denied(session, identity, msg, "referral_view", False)
            if denied is not None:
                return [denied]
            action, referral_id = referral_service.decode_action(msg.choice)  # type: ignore[misc]
            return self._referral_action(session, identity, msg, action, referral_id, now)
        if msg.choice is not None and meeting_service.decode_action(msg.choice) is not None:
            denied = self._denied(session, identity, msg, "meetings", False)
            if denied is not None:
                return [denied]
            answer, meeting_id, occurrence = meeting_service.decode_action(msg.choice)  # type: ignore[misc]
            assert identity.staff is not None
            return [meeting_service.record_answer(session, identity.staff, answer, meeting_id, occurrence,
                                                  channel=msg.channel, now=now)]
        if msg.choice is not None:
            decoded = decode_choice(msg.choice)
            if decoded is None:
                text = msg.choice.strip()[:MAX_TEXT_CHARS]  # a menu button carries a command
            else:
                name, step, value = decoded
                if open_state is not None and open_state.dialog == name and open_state.step == step:
                    turn = self._turn(session, identity, now, choice=value)
                    return self._advance(session, identity, msg, open_state, turn)
                if expired is not None and expired.dialog == name:
                    return [Reply(self._expired_text(expired, is_mostly_latin(text)))]
                stale: list[Item] = [Reply(pick(STALE_BUTTON, open_state is not None and
                                                open_state.data.get("_lang") == "en"))]
                if open_state is not None:  # repeat what the open dialog is waiting for
                    stale += self._reprompt(session, identity, open_state, now)
                return stale

        intent = route(text)
        english = intent.english

        if msg.attachments:
            if open_state is not None and open_state.dialog == "refer" and open_state.step == "attachments":
                turn = self._turn(session, identity, now, text=text, attachments=msg.attachments)
                return self._advance(session, identity, msg, open_state, turn)
            return self._upload(session, identity, msg, english)
        if not text:
            return [Reply(pick(EMPTY_MESSAGE, english))]

        lead: list[Item] = []
        if expired is not None:
            notice = Reply(self._expired_text(expired, english))
            if not intent.explicit:
                # The message most likely answers a question of the expired dialog: do not
                # misread it as a new request, just say what happened.
                return [notice]
            lead.append(notice)

        if open_state is not None:
            dialog = dialogs.get(open_state.dialog)
            if dialog is None:  # a dialog this version no longer knows
                repo.clear_dialog(session, msg.channel, msg.user_key)
            elif intent.kind == IntentKind.CANCEL:
                repo.clear_dialog(session, msg.channel, msg.user_key)
                dialog_en = open_state.data.get("_lang") == "en"
                return [Reply(pick(CANCELLED, dialog_en, title=dialog.title_for(dialog_en)))]
            elif intent.kind == IntentKind.HELP and not intent.arg:
                dialog_en = open_state.data.get("_lang") == "en"
                intro = Reply(pick(IN_DIALOG, dialog_en, title=dialog.title_for(dialog_en)))
                return [intro, *self._reprompt(session, identity, open_state, now)]
            elif intent.explicit:
                repo.clear_dialog(session, msg.channel, msg.user_key)
                lead.append(Reply(pick(ABANDONED, english, title=dialog.title_for(english))))
            else:
                turn = self._turn(session, identity, now, text=text)
                return self._advance(session, identity, msg, open_state, turn)

        return lead + self._command(session, identity, msg, intent, text, now, context)

    def _command(self, session: Session, identity: Identity, msg: Incoming, intent: Intent, text: str,
                 now: datetime, context: dict | None = None) -> list[Item]:
        english = intent.english
        kind = intent.kind
        denied = self._denied(session, identity, msg, kind.value, english)
        if denied is not None:
            return [denied]

        if kind == IntentKind.ASK:
            if not intent.arg:
                return [commands.ask_prompt(english=english)]
            return [_Question(intent.arg, self._consortium_for(identity), context=context)]
        if kind == IntentKind.HELP:
            return [commands.help_menu(identity, english=english)]
        if kind == IntentKind.START:
            if intent.arg and msg.channel == "telegram" and identity.staff is None:
                # Telegram deep link t.me/<bot>?start=CODE arrives as "/start CODE": a binding,
                # under bind's rules (private chats only: in a group, others would read the reply).
                denied = self._denied(session, identity, msg, "bind", english)
                if denied is not None:
                    return [denied]
                return self._begin(session, identity, msg, "bind", intent.arg, now, english)
            return [commands.help_menu(identity, english=english, welcome=True)]
        if kind == IntentKind.CANCEL:
            return [Reply(pick(NOTHING_TO_CANCEL, english))]
        if kind == IntentKind.BIND:
            return self._begin(session, identity, msg, "bind", intent.arg, now, english)
        if kind == IntentKind.REFER:
            return self._begin(session, identity, msg, "refer", intent.arg, now, english)
        if kind == IntentKind.INVITE:
            return self._begin(session, identity, msg, "invite", intent.arg, now, english)
        if kind == IntentKind.STATUS:
            return self._status(session, identity, text, now, english)
        if kind == IntentKind.QUOTA:
            assert identity.staff is not None
            return [quota_service.status_reply(session, identity.staff, self._quota_rules(), _local_day(now))]
        if kind == IntentKind.MEETINGS:
            assert identity.staff is not None
            return [meeting_service.upcoming(session, identity.staff, now)]
        if kind == IntentKind.RECORD_TRAINING:  # "登记下派" presets the kind
            return self._begin(session, identity, msg, "training_record", intent.arg or text, now, english)
        if kind == IntentKind.NEW_MEETING:
            return self._begin(session, identity, msg, "meeting_new", "", now, english)
        if kind == IntentKind.ATTENDANCE:
            assert identity.staff is not None
            return [meeting_service.attendance_reply(session, identity.staff, intent.arg, now)]
        if kind == IntentKind.WHOAMI:
            return [commands.whoami(identity, english=english)]
        if kind == IntentKind.DOCS:
            return [commands.DocumentListing(self._consortium_for(identity), english)]
        if kind == IntentKind.MY_REFERRALS:
            assert identity.staff is not None
            return [referral_service.my_referrals(session, identity.staff, english=english)]
        if kind == IntentKind.PENDING_REFERRALS:
            assert identity.staff is not None
            return [referral_service.pending(session, identity.staff, english=english)]
        if kind == IntentKind.REFERRAL_VIEW:
            return self._view_referral(session, identity, intent.arg, english)
        if kind == IntentKind.LOGIN:
            return [commands.login_link(session, identity, self._ctx.settings, english=english)]
        if kind == IntentKind.USERS:
            return [commands.list_users(session, identity, english=english)]
        if kind == IntentKind.ROLE:
            return [commands.change_roles(session, identity, intent.arg, english=english)]
        if kind == IntentKind.UNBIND:
            return [commands.unbind(session, identity, intent.arg, english=english)]
        return [Reply(pick(UNKNOWN_COMMAND, english, command=intent.arg))]

    def _denied(self, session: Session, identity: Identity, msg: Incoming, command: str,
                english: bool) -> Reply | None:
        """The refusal for ``command`` per ``storage.access.COMMAND_RULES``, or None when allowed."""
        verdict = access.command_verdict(command, identity.staff, private=msg.private)
        if verdict is access.Verdict.ALLOWED:
            return None
        if verdict is access.Verdict.NOT_BOUND:
            return Reply(access_guidance(msg.channel, english=english))
        repo.record(session, identity.actor, "access.denied", target=f"command:{command}",
                    details={"channel": msg.channel, "reason": verdict.value})
        if verdict is access.Verdict.PRIVATE:
            return Reply(pick(PRIVATE_ONLY, english))
        audience = access.COMMAND_RULES[command].audience if command in access.COMMAND_RULES else None
        if command == "upload":
            return Reply(pick(UPLOAD_ADMIN_ONLY, english))
        if audience is access.Audience.CLINICAL:
            return Reply(pick(CLINICAL_ONLY, english))
        if audience is access.Audience.COORDINATION:
            return Reply(pick(COORDINATION_ONLY, english))
        return Reply(pick(ADMIN_ONLY, english))

    # ------------------------------------------------------------------------------------------
    # meetings and quotas

    def _quota_rules(self) -> list:
        from handlers import quotas

        return quotas.load_rules(self._ctx.settings.quota_rules)

    def _status(self, session: Session, identity: Identity, text: str, now: datetime, english: bool) -> list[Item]:
        """``提醒`` / ``/status``: the user's upcoming meetings, their institution's quota progress
        (liaison officers and admins), and for physicians the policies' own rules."""
        staff = identity.staff
        assert staff is not None
        items: list[Item] = [meeting_service.upcoming(session, staff, now)]
        if access.command_verdict("quota", staff) is access.Verdict.ALLOWED:
            items.append(quota_service.status_reply(session, staff, self._quota_rules(), _local_day(now)))
        else:
            items.append(commands.status(identity, text, english=english))
        return items

    # ------------------------------------------------------------------------------------------
    # dialogs

    def _begin(self, session: Session, identity: Identity, msg: Incoming, name: str, arg: str,
               now: datetime, english: bool) -> list[Item]:
        dialog = dialogs.get(name)
        assert dialog is not None, name
        turn = self._turn(session, identity, now, english=english)
        return self._store(session, msg, dialog.name, dialog.begin(turn, arg), now)

    def _advance(self, session: Session, identity: Identity, msg: Incoming, state: DialogState,
                 turn: Turn) -> list[Item]:
        dialog = dialogs.get(state.dialog)
        assert dialog is not None
        return self._store(session, msg, dialog.name, dialog.advance(turn, state.step, state.data), turn.now)

    def _store(self, session: Session, msg: Incoming, name: str, update: Update, now: datetime) -> list[Item]:
        if update.step is None:
            repo.clear_dialog(session, msg.channel, msg.user_key)
        else:
            repo.put_dialog(session, msg.channel, msg.user_key, name, update.step, update.data,
                            ttl=self._ctx.settings.dialog_ttl_minutes, now=now)
        return list(update.replies)

    def _reprompt(self, session: Session, identity: Identity, state: DialogState, now: datetime) -> list[Item]:
        dialog = dialogs.get(state.dialog)
        if dialog is None:
            return []
        turn = self._turn(session, identity, now, english=state.data.get("_lang") == "en")
        return [dialog.step(state.step).prompt(turn, state.data, dialog.name)]

    def _expired_text(self, expired: DialogExpired, english: bool) -> str:
        dialog = dialogs.get(expired.dialog)
        english = expired.data.get("_lang") == "en" if "_lang" in expired.data else english
        title = dialog.title_for(english) if dialog else pick(("操作", "action"), english)
        restart = pick(dialog.restart_hint, english) if dialog else ""
        return pick(EXPIRED, english, title=title, minutes=self._ctx.settings.dialog_ttl_minutes, restart=restart)

    # ------------------------------------------------------------------------------------------
    # referrals

    def _view_referral(self, session: Session, identity: Identity, number: str, english: bool) -> list[Item]:
        from storage import referrals as referral_store

        assert identity.staff is not None
        found = referral_store.get_by_number(session, number) if number else None
        if found is None:
            return [Reply(pick(("没有找到转诊单号“{n}”。发送“我的转诊”查看您的转诊。",
                                "No referral has the number \"{n}\". Send /referrals to list yours."), english,
                               n=number or "?"))]
        return [referral_service.view(session, identity.staff, found, english=english)]

    def _referral_action(self, session: Session, identity: Identity, msg: Incoming, action: str,
                         referral_id: int, now: datetime) -> list[Item]:
        """A button of a referral (a notification's 接收/拒绝, a detail view's actions)."""
        from handlers.referral import rules as referral_rules
        from storage import referrals as referral_store

        staff = identity.staff
        assert staff is not None
        r = referral_store.get(session, referral_id)
        if r is None:
            return [Reply(pick(("这条转诊已不存在。", "That referral no longer exists."), False))]
        if action == "view":
            return [referral_service.view(session, staff, r)]
        if action not in referral_rules.ACTION_LABELS:
            return [Reply(pick(STALE_BUTTON, False))]
        if not referral_rules.may_act(staff, r, action):
            repo.record(session, staff.code, "access.denied", target=f"referral:{r.number}",
                        details={"action": action})
            if not referral_service.may_view(staff, r):
                return [Reply("抱歉，您无权处理这条转诊。")]
            if referral_rules.next_status(r.status, action) is None:
                return [Reply(referral_service.handled_by_text(r), settle=referral_service.status_label(r.status))]
            return [Reply("抱歉，只有接收机构的联络员或管理员可以处理这条转诊。" if action != "cancel"
                          else "抱歉，只有转诊医生本人可以撤销这条转诊。")]
        if referral_rules.next_status(r.status, action) is None:
            return [Reply(referral_service.handled_by_text(r), settle=referral_service.status_label(r.status))]
        if action == "reject":  # a reason is required: ask for it
            replies = self._begin(session, identity, msg, "reject", str(r.id), now, False)
            return replies
        try:
            referral_service.act(session, self.router, staff, r, action, channel=msg.channel, now=now)
        except referral_store.StaleTransition:
            return [Reply(referral_service.handled_by_text(r), settle=referral_service.status_label(r.status))]
        label = referral_service.status_label(r.status)
        text = f"转诊 {r.number} {label}。" + ("已通知转诊医生。" if staff.id != r.sender_id else "已通知接收机构。")
        return [Reply(text, choices=referral_service.action_choices(staff, r), settle=label)]

    # ------------------------------------------------------------------------------------------
    # knowledge

    def _consortium_for(self, identity: Identity) -> str | None:
        return identity.consortium_code or self._ctx.settings.default_consortium

    def _upload(self, session: Session, identity: Identity, msg: Incoming, english: bool) -> list[Item]:
        """A file in chat: admins' policy documents go to the knowledge base; others are told why not."""
        denied = self._denied(session, identity, msg, "upload", english)
        if denied is not None:
            return [denied]
        return [commands.DocumentUpload(msg.attachments, identity.actor, identity.consortium_code, english)]

    def _ingest(self, upload: commands.DocumentUpload) -> list[Reply]:
        from knowledge.extract_types import IngestError

        def may_replace(existing: str | None) -> bool:
            return existing is None or existing == upload.consortium

        lines = []
        for attachment in upload.attachments:
            try:
                result = self.kb.ingest_bytes(
                    attachment.file_name, attachment.data, uploaded_by=upload.uploaded_by,
                    consortium=upload.consortium, may_replace=may_replace,
                )
            except IngestError as exc:
                lines.append(pick(UPLOAD_FAILED, upload.english, file=exc.file_name,
                                  reason=exc.reason if upload.english else exc.reason_zh))
                continue
            template = {"added": UPLOAD_ADDED, "updated": UPLOAD_UPDATED}.get(result.status, UPLOAD_UNCHANGED)
            lines.append(pick(template, upload.english, title=result.title, version=result.version,
                              chunks=result.chunk_count))
        return [Reply("\n".join(lines))]

    def _resolve(self, lookup: commands.PolicyLookup, msg: Incoming) -> list[Reply]:
        consortium = lookup.consortium or self._ctx.settings.default_consortium
        context = followup.Context.from_data(getattr(lookup, "context", None))
        turn = followup.interpret(lookup.question, context, self.kb.snapshot().idf if context else None)
        if turn.kind is followup.Kind.SOURCE:  # answered from the stored quotes, no retrieval
            text, after = followup.source_reply(context, turn.index, english=turn.english), context
        elif turn.kind is followup.Kind.MORE:
            answer = self.kb.ask(turn.question, consortium=consortium)
            text, after = followup.more_reply(context, answer.hits, refused=answer.refused, english=turn.english)
        else:  # a question, maybe rewritten from a follow-up ("那理事会呢？" → "理事会多久开一次？")
            answer = self.kb.ask(turn.question, consortium=consortium)
            text, after = answer.text, followup.Context.of_answer(turn.question, consortium, answer)
        if msg.private:
            self._remember(msg, after)
        return [Reply(lookup.intro + text, choices=lookup.choices)]

    def _remember(self, msg: Incoming, context: followup.Context | None) -> None:
        """Keep the last answer's context for follow-ups, unless a real dialog took the row."""
        if context is None:
            return
        try:
            with self._ctx.sessions.begin() as session:
                repo.put_dialog_unless_other(session, msg.channel, msg.user_key, followup.CONTEXT_DIALOG,
                                             followup.CONTEXT_STEP, context.to_data(),
                                             ttl=self._ctx.settings.dialog_ttl_minutes, now=self._clock())
        except Exception:  # the answer matters more than the context: send it anyway
            log.warning("could not store the answer context", exc_info=True,
                        extra={"channel": msg.channel})


__all__ = ["MAX_TEXT_CHARS", "ConversationEngine"]
