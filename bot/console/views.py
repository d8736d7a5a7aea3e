"""Request handlers of the admin console (thin: queries in storage/, rules in storage.access and
handlers/, rendering in templates/)."""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from sqlalchemy import func, select

from bot.uploads import UploadRefused, read_upload
from bot.webauth import client_address, request_session
from handlers.referral.rules import DIRECTION_LABELS, STATUS_LABELS, URGENCY_LABELS, mask_name
from storage import access
from storage import repositories as repo
from storage.models import AuditLog, Institution, Staff
from storage.privacy import mask_id_number, mask_phone
from storage.types import CHINA_TZ, utcnow

CONSOLE_CTX_KEY: web.AppKey[Any] = web.AppKey("yilian_console_ctx", object)
CONSOLE_ENGINE_KEY: web.AppKey[Any] = web.AppKey("yilian_console_engine", object)

PAGE_SIZE = 50
NAV = [("documents", "文档"), ("hittest", "命中测试"), ("referrals", "转诊"), ("meetings", "会议"),
       ("quotas", "配额"), ("people", "人员"), ("audit", "审计")]
STATUS_ZH = {k: zh for k, (zh, _en) in STATUS_LABELS.items()}
DIRECTION_ZH = {k: zh for k, (zh, _en) in DIRECTION_LABELS.items()}
ANSWER_ZH = {"attend": "参加", "leave": "请假", "none": "未回复"}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=jinja2.select_autoescape(["html"]),
    trim_blocks=True, lstrip_blocks=True,
)


def _local(value: datetime | None) -> str:
    return value.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M") if value else ""


_templates.filters["local"] = _local


@dataclass
class Viewer:
    """The signed-in staff member of one console request, with what they may see."""

    code: str
    name: str
    csrf: str
    scope: access.ConsoleScope
    pages: list[tuple[str, str]]
    staff_id: int
    #: may open the page or use the action asked for (else the 403 page, with the navigation)
    allowed: bool = True


def _render(name: str, viewer: Viewer | None, http_status: int = 200, **values: Any) -> web.Response:
    html = _templates.get_template(name).render(viewer=viewer, **values)
    return web.Response(text=html, status=http_status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 # everything is the app's own: no external script, style, image or frame
                                 "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                 "style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
                                 "frame-ancestors 'none'"})


async def _viewer(request: web.Request, page: str) -> Viewer | web.StreamResponse:
    """Who is asking, if they may open ``page``: else the sign-in page, the chat, or a 403."""
    user = await request_session(request)
    if user is None:  # sign in first (in demo mode: pick an identity in the chat)
        demo = request.app[CONSOLE_CTX_KEY].settings.demo
        raise web.HTTPSeeOther("/" if demo else "/login?next=" + quote(str(request.rel_url)))
    if user.staff_code is None:  # a demo-mode guest
        raise web.HTTPSeeOther("/")
    ctx = request.app[CONSOLE_CTX_KEY]

    def load() -> Viewer | None:
        with ctx.sessions() as session:
            staff = repo.get_staff_by_code(session, user.staff_code)
            if staff is None or access.console_home(staff) is None:
                return None
            pages = [(p, label) for p, label in NAV if access.console_allowed(p, staff)]
            return Viewer(staff.code, staff.name, user.csrf_token, access.console_scope(staff), pages, staff.id,
                          allowed=access.console_allowed(page, staff))

    viewer = await asyncio.to_thread(load)
    if viewer is None:  # physicians (and anyone without a console page) work in the chat
        raise web.HTTPSeeOther("/?console=none")
    if not viewer.allowed:
        return _render("forbidden.html", viewer, http_status=403)
    return viewer


async def _form(request: web.Request, viewer: Viewer) -> dict[str, str] | web.Response:
    """The posted form, if its CSRF token is this session's; else a 403 page."""
    data = await request.post()
    sent = str(data.get("csrf", ""))
    if not sent or not hmac.compare_digest(sent.encode(), viewer.csrf.encode()):
        return _render("forbidden.html", viewer, http_status=403, reason="页面已过期，请刷新后重试。")
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def _staff(session, viewer: Viewer) -> Staff:  # noqa: ANN001 - Session
    return session.get(Staff, viewer.staff_id)


def _replace_rule(staff: Staff):  # noqa: ANN202
    """``may_replace`` for ``KnowledgeBase.ingest_bytes``, decided now (while ``staff`` is in its
    session) so that it can be asked later without touching the database."""
    allowed = {code for code in (None, staff.institution.consortium.code if staff.institution else None)
               if access.can_manage_documents(staff, code)}
    return lambda existing: existing in allowed


def console(name: str, *, form: bool = False):  # noqa: ANN201 - a decorator
    """A console page or action: the handler gets the signed-in ``Viewer`` who may use ``name``
    (others get the sign-in page, the chat or a 403), and with ``form`` the posted fields once
    their CSRF token is checked."""

    def wrap(fn):  # noqa: ANN001, ANN202
        @functools.wraps(fn)
        async def handler(request: web.Request) -> web.StreamResponse:
            viewer = await _viewer(request, name)
            if isinstance(viewer, web.StreamResponse):
                return viewer
            if not form:
                return await fn(request, viewer)
            fields = await _form(request, viewer)
            if isinstance(fields, web.Response):
                return fields
            return await fn(request, viewer, fields)

        return handler

    return wrap


# ---- pages -------------------------------------------------------------------------------------


async def home(request: web.Request) -> web.StreamResponse:
    viewer = await _viewer(request, "documents")
    if isinstance(viewer, web.Response):  # a liaison officer: their first page
        raise web.HTTPSeeOther(f"/admin/{viewer.pages[0][0]}")
    raise web.HTTPSeeOther("/admin/documents")


@console("documents")
async def documents(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    kb = request.app[CONSOLE_ENGINE_KEY].kb
    docs = await asyncio.to_thread(kb.documents)
    page_no = _page_number(request)
    notice = request.query.get("notice", "")
    return _render("documents.html", viewer, documents=docs[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE],
                   total=len(docs), page_no=page_no, pages=max(1, -(-len(docs) // PAGE_SIZE)),
                   notice=notice[:300], page="documents")


def _page_number(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    return max(1, int(raw)) if raw.isdigit() else 1


async def _read_upload(request: web.Request, viewer: Viewer, limit: int
                       ) -> tuple[str, bytes, dict[str, str]] | web.Response:
    """(file name, bytes, other fields) of a multipart form whose CSRF token is this session's;
    else the page saying what is wrong."""
    try:
        form = await read_upload(request, limit)
    except UploadRefused as exc:
        return _render("documents_error.html", viewer, http_status=exc.status, error=exc.message)
    if not hmac.compare_digest(form.fields.get("csrf", "").encode(), viewer.csrf.encode()):
        return _render("forbidden.html", viewer, http_status=403, reason="页面已过期，请刷新后重试。")
    if not form.file_name or not form.data:
        return _render("documents_error.html", viewer, http_status=400, error="没有收到文件，请重新选择文件。")
    return form.file_name, form.data, form.fields


@console("document.upload")
async def documents_upload(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """上传: the file is kept aside and previewed (title, clauses, diff against the version it
    replaces); nothing is served from it before 确认."""
    ctx = request.app[CONSOLE_CTX_KEY]
    upload = await _read_upload(request, viewer, ctx.settings.max_upload_bytes)
    if isinstance(upload, web.Response):
        return upload
    name, data, _fields = upload
    kb = request.app[CONSOLE_ENGINE_KEY].kb

    def stage():  # noqa: ANN202
        import secrets

        from knowledge.extract_types import IngestError
        from storage.models import StagedUpload

        try:
            preview = kb.preview(name, data)
        except IngestError as exc:
            return None, None, exc.reason_zh or exc.reason
        token = secrets.token_urlsafe(24)
        with ctx.sessions.begin() as session:
            session.query(StagedUpload).filter(StagedUpload.created_at < utcnow() - timedelta(days=1)).delete()
            session.add(StagedUpload(token=token, staff_code=viewer.code, file_name=name[:300], data=data))
        return preview, token, None

    preview, token, error = await asyncio.to_thread(stage)
    if error:
        return _render("documents_error.html", viewer, http_status=400, error=f"《{name}》未收录：{error}")
    return _render("preview.html", viewer, preview=preview, token=token, file_name=name, page="documents")


@console("document.upload", form=True)
async def documents_confirm(request: web.Request, viewer: Viewer, form: dict[str, str]) -> web.StreamResponse:
    """确认: the previewed file is ingested (a new version replaces the old one at once)."""
    ctx = request.app[CONSOLE_CTX_KEY]
    kb = request.app[CONSOLE_ENGINE_KEY].kb

    def ingest():  # noqa: ANN202
        from knowledge.extract_types import IngestError
        from storage.models import StagedUpload

        token = form.get("token", "")
        mine = (StagedUpload.token == token) & (StagedUpload.staff_code == viewer.code)
        with ctx.sessions() as session:
            staged = session.scalars(select(StagedUpload).where(mine)).first()
            if staged is None:
                return None, "预览已过期或已确认过，请重新上传。"
            name, data = staged.file_name, bytes(staged.data)
            staff = _staff(session, viewer)
            consortium = staff.institution.consortium.code if staff.institution else None
            may_replace = _replace_rule(staff)

            with repo.audit_origin("web", client_address(request)):
                try:
                    result = kb.ingest_bytes(name, data, uploaded_by=viewer.code, consortium=consortium,
                                             may_replace=may_replace)
                except IngestError as exc:  # the staged file is kept: 确认 can be tried again
                    return None, f"《{name}》未收录：{exc.reason_zh or exc.reason}"
        with ctx.sessions.begin() as session:
            session.query(StagedUpload).filter(mine).delete()
        return result, None

    result, error = await asyncio.to_thread(ingest)
    if error:
        return _render("documents_error.html", viewer, http_status=400, error=error)
    verb = {"added": "已收录", "updated": "已更新为新版本", "unchanged": "内容未变化"}.get(result.status, result.status)
    notice = f"《{result.title}》{verb}（v{result.version}，{result.chunk_count} 条）"
    raise web.HTTPSeeOther("/admin/documents?notice=" + quote(notice))


@console("document.delete", form=True)
async def documents_delete(request: web.Request, viewer: Viewer, form: dict[str, str]) -> web.StreamResponse:
    title = form.get("title", "")
    if form.get("confirm") != "yes":
        return _render("confirm_delete.html", viewer, title=title)
    ctx = request.app[CONSOLE_CTX_KEY]
    kb = request.app[CONSOLE_ENGINE_KEY].kb

    def remove() -> str:
        with ctx.sessions() as session:
            staff = _staff(session, viewer)
            doc = kb.document(title)
            if doc is None:
                return f"没有找到《{title}》。"
            if not access.can_manage_documents(staff, doc.consortium):
                return f"《{title}》属于其他医联体，您不能删除。"
        with repo.audit_origin("web", client_address(request)):
            return f"《{title}》已删除。" if kb.remove(title, removed_by=viewer.code) else f"没有找到《{title}》。"

    notice = await asyncio.to_thread(remove)
    raise web.HTTPSeeOther("/admin/documents?notice=" + quote(notice))


@console("documents")
async def documents_history(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    title = request.query.get("title", "")[:300]
    kb = request.app[CONSOLE_ENGINE_KEY].kb
    versions = await asyncio.to_thread(kb.versions, title)
    current = await asyncio.to_thread(kb.document, title)
    return _render("history.html", viewer, title=title, versions=versions, current=current, page="documents")


@console("document.rollback", form=True)
async def documents_rollback(request: web.Request, viewer: Viewer, form: dict[str, str]) -> web.StreamResponse:
    title = form.get("title", "")
    version = int(form["version"]) if form.get("version", "").isdigit() else 0
    if form.get("confirm") != "yes":
        return _render("confirm_rollback.html", viewer, title=title, version=version)
    ctx = request.app[CONSOLE_CTX_KEY]
    kb = request.app[CONSOLE_ENGINE_KEY].kb

    def run() -> str:
        from knowledge.extract_types import IngestError

        with ctx.sessions() as session:
            staff = _staff(session, viewer)
            doc = kb.document(title)
            if doc is not None and not access.can_manage_documents(staff, doc.consortium):
                return f"《{title}》属于其他医联体，您不能回滚。"
            may_replace = _replace_rule(staff)

        with repo.audit_origin("web", client_address(request)):
            try:
                result = kb.rollback(title, version, rolled_back_by=viewer.code, may_replace=may_replace)
            except IngestError as exc:
                return f"《{title}》未回滚：{exc.reason_zh or exc.reason}"
        if result.status == "unchanged":
            return f"《{title}》当前内容已与第 {version} 版相同。"
        return f"《{title}》已回滚到第 {version} 版的内容（现为 v{result.version}）。"

    notice = await asyncio.to_thread(run)
    raise web.HTTPSeeOther("/admin/documents?notice=" + quote(notice))


@console("hittest")
async def hittest(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    question = request.query.get("q", "").strip()[:500]
    consortium = request.query.get("consortium", "").strip() or None
    ctx = request.app[CONSOLE_CTX_KEY]
    with ctx.sessions() as session:
        consortia = [c for c in session.scalars(select(_consortium_model()))]
        options = [(c.code, c.name) for c in consortia]
    result = None
    if question:
        kb = request.app[CONSOLE_ENGINE_KEY].kb

        def run() -> dict[str, Any]:
            from knowledge.answerability import MODEL, features

            query, hits = kb._retrieve(question, consortium=consortium, k=10)
            answer = kb.ask(question, consortium=consortium)
            probability = MODEL.probability(features(query, hits)) if hits else 0.0
            return {"answer": answer, "hits": hits, "probability": probability, "threshold": MODEL.threshold}

        result = await asyncio.to_thread(run)
    return _render("hittest.html", viewer, question=question, consortium=consortium or "", options=options,
                   result=result, page="hittest")


def _consortium_model():  # noqa: ANN202
    from storage.models import Consortium

    return Consortium


def _scope_institutions(session, viewer: Viewer) -> list[Institution]:  # noqa: ANN001
    scope = viewer.scope
    stmt = select(Institution).where(Institution.consortium_id == scope.consortium_id).order_by(Institution.id)
    if scope.institution_id is not None:
        stmt = stmt.where(Institution.id == scope.institution_id)
    return list(session.scalars(stmt))


def _since(value: str | None) -> datetime | None:
    """``YYYY-MM-DD`` (Beijing time) → the start of that day, aware; None if empty or invalid."""
    try:
        return datetime.strptime((value or "").strip(), "%Y-%m-%d").replace(tzinfo=CHINA_TZ) if value else None
    except ValueError:
        return None


def _referral_rows(session, viewer: Viewer, query) -> list:  # noqa: ANN001
    """The referrals ``viewer`` may list, filtered by the query's status, direction, institution
    (either end) and ``since`` date."""
    from storage import referrals as store

    ids = [i.id for i in _scope_institutions(session, viewer)]
    wanted = query.get("institution", "")
    if wanted.isdigit() and int(wanted) in ids:
        ids = [int(wanted)]
    rows = store.list_referrals(session, status=query.get("status") or None, institution_ids=ids,
                                since=_since(query.get("since")))
    direction = query.get("direction")
    if direction:
        rows = [r for r in rows if r.direction == direction]
    return rows


@console("referrals")
async def referrals(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    status = request.query.get("status", "")
    direction = request.query.get("direction", "")
    page_no = _page_number(request)
    ctx = request.app[CONSOLE_CTX_KEY]

    def load() -> tuple[list[dict[str, Any]], int]:
        with ctx.sessions() as session:
            rows = _referral_rows(session, viewer, request.query)
            institutions = [(i.id, i.name) for i in _scope_institutions(session, viewer)]
            total = len(rows)
            shown = rows[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE]
            return [{
                "number": r.number, "status": STATUS_ZH.get(r.status, r.status),
                "direction": DIRECTION_ZH.get(r.direction, r.direction),
                "from": r.from_institution.name, "to": r.to_institution.name,
                "patient": mask_name(r.patient_name or ""),  # patient data stays masked in lists
                "created": _local(r.created_at),
            } for r in shown], total, institutions

    rows, total, institutions = await asyncio.to_thread(load)
    return _render("referrals.html", viewer, rows=rows, total=total, page_no=page_no,
                   pages=max(1, -(-total // PAGE_SIZE)), status=status, direction=direction,
                   statuses=STATUS_ZH, directions=DIRECTION_ZH, institutions=institutions,
                   institution=request.query.get("institution", ""), since=request.query.get("since", "")[:10],
                   filters=urlencode({k: request.query.get(k, "") for k in ("status", "direction", "institution",
                                                                               "since")}),
                   may_export=viewer.scope.institution_id is None, page="referrals")


@console("referrals")
async def referral_detail(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """One referral with its timeline, masked; 查看完整信息 (POST, audited) unmasks the patient's
    ID number and phone for someone who may see the referral at all."""
    number = request.match_info["number"]
    full = request.method == "POST"
    if full:
        form = await _form(request, viewer)
        if isinstance(form, web.Response):
            return form
    ctx = request.app[CONSOLE_CTX_KEY]

    def load() -> dict[str, Any] | None:
        from storage import referrals as store

        with ctx.sessions.begin() as session:
            r = store.get_by_number(session, number)
            staff = _staff(session, viewer)
            if r is None or not access.can_view_referral(staff, r.from_institution, r.to_institution,
                                                         sender_id=r.sender_id):
                return None
            if full:
                with repo.audit_origin("web", client_address(request)):
                    repo.record(session, viewer.code, "referral.view_full", r.number)
            return {
                "number": r.number, "status": STATUS_ZH.get(r.status, r.status),
                "direction": DIRECTION_ZH.get(r.direction, r.direction),
                "urgency": URGENCY_LABELS.get(r.urgency, (r.urgency,))[0], "green_channel": r.green_channel,
                "from": r.from_institution.name, "to": r.to_institution.name, "to_department": r.to_department or "",
                "sender": r.sender.name, "sender_department": r.sender_department or "",
                "patient": r.patient_name if full else mask_name(r.patient_name or ""),
                "sex": r.patient_sex, "age": r.patient_age,
                "id_number": (r.patient_id_number if full else mask_id_number(r.patient_id_number)) or "",
                "phone": (r.patient_phone if full else mask_phone(r.patient_phone)) or "",
                "diagnosis": r.diagnosis, "history": r.history, "reason": r.reason,
                "reject_reason": r.reject_reason or "",
                "timeline": [{"at": _local(e.at), "from": STATUS_ZH.get(e.from_status or "", e.from_status or ""),
                              "to": STATUS_ZH.get(e.to_status, e.to_status), "actor": e.actor,
                              "channel": e.channel or "", "note": e.note or ""} for e in r.events],
            }

    referral = await asyncio.to_thread(load)
    if referral is None:
        return _render("forbidden.html", viewer, http_status=404, reason="没有找到这条转诊，或您无权查看。")
    return _render("referral.html", viewer, r=referral, full=full, page="referrals")


@console("referral.export")
async def referrals_export(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    fmt = request.match_info["fmt"]
    ctx = request.app[CONSOLE_CTX_KEY]

    def build() -> tuple[str, int]:
        from handlers.referral import export
        from handlers.referral import fhir as fhir_export

        with ctx.sessions.begin() as session:
            rows = list(reversed(_referral_rows(session, viewer, request.query)))
            text = export.to_csv(rows) if fmt == "csv" else json.dumps(fhir_export.bundle(rows), ensure_ascii=False,
                                                                       indent=2)
            with repo.audit_origin("web", client_address(request)):
                repo.record(session, viewer.code, "referral.export", details={"format": fmt, "count": len(rows)})
            return text, len(rows)

    text, _count = await asyncio.to_thread(build)
    stamp = utcnow().astimezone(CHINA_TZ).strftime("%Y%m%d")
    if fmt == "csv":
        return web.Response(text=text, content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="referrals-{stamp}.csv"'})
    return web.Response(text=text, content_type="application/fhir+json", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="referrals-{stamp}.fhir.json"'})


@console("meetings")
async def meetings(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    ctx = request.app[CONSOLE_CTX_KEY]

    def load() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from handlers import meeting_service
        from storage import meetings as store

        now = utcnow()
        upcoming, past = [], []
        with ctx.sessions() as session:
            staff = _staff(session, viewer)
            inst = staff.institution
            for m in store.list_meetings(session, consortium_id=viewer.scope.consortium_id):
                occurrence, rows = meeting_service.attendance(session, m, now)
                if viewer.scope.institution_id is not None:
                    rows = [r for r in rows if inst is not None and r.institution == inst.name]
                    if not rows:
                        continue
                counts = {k: sum(1 for r in rows if r.answer == k) for k in ANSWER_ZH}
                item = {"id": m.id, "kind": m.kind, "title": m.title, "status": m.status,
                        "when": _local(occurrence or m.starts_at), "place": m.place or m.link or "",
                        "counts": {ANSWER_ZH[k]: v for k, v in counts.items()},
                        "rows": [{"name": r.name or "—", "institution": r.institution,
                                  "answer": ANSWER_ZH.get(r.answer, r.answer)} for r in rows]}
                (upcoming if occurrence is not None and occurrence >= now and m.status != "cancelled"
                 else past).append(item)
        return upcoming, past

    upcoming, past = await asyncio.to_thread(load)
    return _render("meetings.html", viewer, upcoming=upcoming, past=past, page="meetings",
                   notice=request.query.get("notice", "")[:300], may_manage=not viewer.scope.read_only)


MEETING_KINDS = ("联席会议", "理事会", "工作例会", "其他")
REPEATS = {"": "不重复", "monthly": "每月", "quarterly": "每季度", "yearly": "每年"}


def _meeting_form(viewer: Viewer, values: Mapping[str, str], failed: tuple[str, str | None] | None = None,
                  **extra: object) -> web.Response:
    """The meeting form with ``values``; ``failed`` is a MeetingError's (message, field): shown next
    to its field, or above the form when it concerns none (HTTP 400 either way)."""
    message, field = failed or ("", None)
    return _render("meeting_form.html", viewer, http_status=400 if failed else 200, values=values,
                   error="" if field else message, errors={field: message} if field else {},
                   kinds=MEETING_KINDS, repeats=REPEATS, page="meetings", **extra)


@console("meeting.manage")
async def meetings_create(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """新建会议: the invited institutions' liaison officers get the invitation at once (as from
    chat); a mistake is shown next to its field, with everything typed kept."""
    ctx = request.app[CONSOLE_CTX_KEY]
    if request.method == "GET":
        return _meeting_form(viewer, {})
    form = await _form(request, viewer)
    if isinstance(form, web.Response):
        return form

    def create() -> tuple[str, str | None] | None:
        from handlers import meeting_service

        try:  # a MeetingError leaves the transaction, which is rolled back: nothing is half made
            with ctx.sessions.begin() as session, repo.audit_origin("web", client_address(request)):
                staff = _staff(session, viewer)
                meeting_service.add_meeting(
                    session, ctx.router, consortium_code=staff.institution.consortium.code,
                    kind=form.get("kind", ""), title=form.get("title", ""), at=form.get("at", "").replace("T", " "),
                    place=form.get("place") or None, link=form.get("link") or None,
                    agenda=form.get("agenda") or None, repeat=form.get("repeat") or None,
                    actor=viewer.code, organiser=staff, now=utcnow())
        except meeting_service.MeetingError as exc:
            return str(exc), exc.field
        return None

    failed = await asyncio.to_thread(create)
    if failed:
        return _meeting_form(viewer, form, failed)
    raise web.HTTPSeeOther("/admin/meetings?notice=" + quote(f"已安排“{form.get('title', '')}”，已通知受邀机构的联络员。"))


@console("meeting.manage")
async def meetings_edit(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """修改 a scheduled meeting (time, place, link, agenda, title); invitees are told of the change
    with an updated .ics, as from chat."""
    from handlers import meeting_service
    from storage.models import Meeting

    ctx = request.app[CONSOLE_CTX_KEY]
    meeting_id = int(request.match_info["meeting_id"])

    def current() -> dict[str, str] | None:
        with ctx.sessions() as session:
            m = session.get(Meeting, meeting_id)
            if m is None or m.consortium_id != viewer.scope.consortium_id or m.status == "cancelled":
                return None
            return {"kind": m.kind, "title": m.title, "at": _local(m.starts_at), "place": m.place or "",
                    "link": m.link or "", "agenda": m.agenda or "", "repeat": m.repeat or ""}

    before = await asyncio.to_thread(current)
    if before is None:
        return _render("forbidden.html", viewer, http_status=404, reason="没有找到这个会议，或它已取消。")
    action = f"/admin/meetings/{meeting_id}/edit"
    if request.method == "GET":
        return _meeting_form(viewer, before, action=action, editing=True)
    form = await _form(request, viewer)
    if isinstance(form, web.Response):
        return form

    def save() -> tuple[str, str | None] | None:
        changed = {k: form.get(k, "").strip() for k in ("title", "place", "link", "agenda")
                   if form.get(k, "").strip() != before[k]}
        at = form.get("at", "").replace("T", " ").strip()
        try:
            with ctx.sessions.begin() as session, repo.audit_origin("web", client_address(request)):
                meeting_service.edit_meeting(session, ctx.router, session.get(Meeting, meeting_id), actor=viewer.code,
                                             now=utcnow(), at=at if at and at != before["at"] else None, **changed)
        except meeting_service.MeetingError as exc:
            return str(exc), exc.field
        return None

    failed = await asyncio.to_thread(save)
    if failed:
        return _meeting_form(viewer, {**before, **form}, failed, action=action, editing=True)
    raise web.HTTPSeeOther("/admin/meetings?notice=" + quote(f"已修改“{form.get('title') or before['title']}”，已通知受邀机构的联络员。"))


@console("meeting.manage", form=True)
async def meetings_cancel(request: web.Request, viewer: Viewer, form: dict[str, str]) -> web.StreamResponse:
    ctx = request.app[CONSOLE_CTX_KEY]
    meeting_id = int(request.match_info["meeting_id"])
    if form.get("confirm") != "yes":
        return _render("confirm_cancel.html", viewer, meeting_id=meeting_id, title=form.get("title", ""))

    def cancel() -> str:
        from handlers import meeting_service
        from storage.models import Meeting

        with ctx.sessions.begin() as session, repo.audit_origin("web", client_address(request)):
            meeting = session.get(Meeting, meeting_id)
            if meeting is None or meeting.consortium_id != viewer.scope.consortium_id:
                return "没有找到这个会议。"
            try:
                meeting_service.cancel_meeting(session, ctx.router, meeting, actor=viewer.code, now=utcnow())
            except meeting_service.MeetingError as exc:
                return str(exc)
            return f"“{meeting.title}”已取消，已通知受邀机构的联络员。"

    notice = await asyncio.to_thread(cancel)
    raise web.HTTPSeeOther("/admin/meetings?notice=" + quote(notice))


@console("quotas")
async def quotas(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    ctx = request.app[CONSOLE_CTX_KEY]

    def load() -> list[dict[str, Any]]:
        from handlers import quota_service
        from handlers import quotas as rules_mod

        today = utcnow().astimezone(CHINA_TZ).date()
        rules = rules_mod.load_rules(ctx.settings.quota_rules)
        with ctx.sessions() as session:
            staff = _staff(session, viewer)
            code = staff.institution.consortium.code if staff.institution else None
            progress = quota_service.status(session, rules, today, consortium=code,
                                            institution_id=viewer.scope.institution_id)
        margin = ctx.settings.quota_pace_margin
        return [{
            "institution": p.institution.name, "rule": p.rule.title, "source": p.rule.source,
            "period": p.period_label, "target": p.target, "done": p.done, "partial": p.partial,
            "percent": None if p.fraction is None else round(100 * min(1.0, p.fraction)),
            "elapsed": round(100 * p.elapsed), "behind": bool(p.behind(margin)), "met": p.met,
            "destination": p.destination.name if p.destination else "",
        } for p in progress]

    rows = await asyncio.to_thread(load)
    return _render("quotas.html", viewer, rows=rows, page="quotas", notice=request.query.get("notice", "")[:300],
                   may_import=not viewer.scope.read_only)


@console("quota.import")
async def quotas_import(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """导入: training records from CSV/XLSX; a file with any bad row is refused whole, each bad
    row named by its line (as ``yilian quotas import``)."""
    ctx = request.app[CONSOLE_CTX_KEY]
    upload = await _read_upload(request, viewer, 5 * 1024 * 1024)
    if isinstance(upload, web.Response):
        return upload
    name, data, _fields = upload

    def run():  # noqa: ANN202
        from handlers import quota_service

        with ctx.sessions.begin() as session, repo.audit_origin("web", client_address(request)):
            return quota_service.import_records(session, name, data, actor=viewer.code, source="console")

    result = await asyncio.to_thread(run)
    if not result.ok:
        return _render("quota_errors.html", viewer, http_status=400, file_name=name, errors=result.errors[:50],
                       more=max(0, len(result.errors) - 50), page="quotas")
    raise web.HTTPSeeOther("/admin/quotas?notice=" + quote(f"《{name}》已导入 {result.added} 条进修/下派记录。"))


@console("people")
async def people(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    ctx = request.app[CONSOLE_CTX_KEY]

    def load() -> list[dict[str, Any]]:
        with ctx.sessions() as session:
            insts = session.scalars(select(Institution).where(Institution.consortium_id == viewer.scope.consortium_id)
                                    .order_by(Institution.id)).all()
            out = []
            for inst in insts:
                staff = repo.list_staff(session, institution_id=inst.id)
                out.append({"name": inst.name, "level": inst.level, "staff": [{
                    "code": s.code, "name": s.name, "roles": s.roles_zh, "role_keys": list(s.roles or []),
                    "department": s.department or "",
                    "phone": mask_phone(s.phone) or "", "active": bool(s.active),
                    "channels": "、".join(c for c, bound in (("企业微信", s.wecom_userid), ("Telegram", s.telegram_user_id))
                                         if bound) or "未绑定",
                } for s in staff]})
            return out

    rows = await asyncio.to_thread(load)
    return _render("people.html", viewer, institutions=rows, page="people", roles=ROLE_CHOICES,
                   notice=request.query.get("notice", "")[:300])


ROLE_CHOICES = (("physician", "医生"), ("liaison", "联络员"), ("admin", "管理员"))


@console("people.manage", form=True)
async def people_action(request: web.Request, viewer: Viewer, form: dict[str, str]) -> web.StreamResponse:
    """邀请 (a one-time binding code to hand over), 撤销 (unbind Telegram, end web sessions) and
    role changes, for staff of the admin's own consortium; each audited."""
    ctx = request.app[CONSOLE_CTX_KEY]
    code, action = request.match_info["code"], request.match_info["action"]

    def run() -> tuple[str, str | None]:
        from storage import signin

        with ctx.sessions.begin() as session, repo.audit_origin("web", client_address(request)):
            admin = _staff(session, viewer)
            person = repo.get_staff_by_code(session, code, active_only=False)
            if person is None or not access.can_manage_staff_member(admin, person):
                return "没有找到这位人员，或其不属于本医联体。", None
            if action == "invite":
                plain = repo.create_invite(session, person, created_by=viewer.code,
                                           ttl_hours=ctx.settings.invite_ttl_hours)
                return f"已为{person.name}生成一次性绑定码（{ctx.settings.invite_ttl_hours} 小时内有效）。", plain
            if action == "revoke":
                unbound = repo.unbind_telegram(session, person, actor=viewer.code)
                ended = signin.revoke_staff_sessions(session, person, actor=viewer.code)
                return f"已撤销{person.name}的 Telegram 绑定{'' if unbound else '（原本未绑定）'}，结束网页登录 {ended} 个。", None
            roles = [r for r, _ in ROLE_CHOICES if form.get(f"role_{r}") == "on"]
            if not roles:
                return "至少要保留一个角色。", None
            if person.id == admin.id and "admin" not in roles:
                return "不能取消自己的管理员角色（请另一位管理员操作）。", None
            changed = repo.set_roles(session, person, roles, actor=viewer.code)
            return (f"{person.name}的角色已改为 {person.roles_zh}。" if changed else "角色没有变化。"), None

    notice, invite_code = await asyncio.to_thread(run)
    if invite_code:
        return _render("invite.html", viewer, notice=notice, code=invite_code, page="people")
    raise web.HTTPSeeOther("/admin/people?notice=" + quote(notice))


@console("audit")
async def audit(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    action = request.query.get("action", "").strip()[:50]
    page_no = _page_number(request)
    ctx = request.app[CONSOLE_CTX_KEY]

    def load() -> tuple[list[dict[str, Any]], int]:
        with ctx.sessions() as session:
            stmt = select(AuditLog)
            if action:
                stmt = stmt.where(AuditLog.action == action)
            total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = session.scalars(stmt.order_by(AuditLog.at.desc(), AuditLog.id.desc())
                                   .offset((page_no - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
            return [{"at": _local(r.at), "actor": r.actor, "action": r.action, "target": r.target or "",
                     "channel": r.channel or "", "address": r.client_address or ""} for r in rows], total

    rows, total = await asyncio.to_thread(load)
    return _render("audit.html", viewer, rows=rows, total=total, page_no=page_no,
                   pages=max(1, -(-total // PAGE_SIZE)), action=action, page="audit")


@console("audit.export")
async def audit_export(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """导出 the audit log (filtered like the page) as CSV; the export itself is audited."""
    action = request.query.get("action", "").strip()[:50]
    ctx = request.app[CONSOLE_CTX_KEY]

    def build() -> str:
        import csv
        import io

        from storage.privacy import scrub_text

        with ctx.sessions.begin() as session:
            stmt = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(100_000)
            if action:
                stmt = stmt.where(AuditLog.action == action)
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["时间", "操作人", "操作", "对象", "渠道", "地址", "详情"])
            for r in session.scalars(stmt):
                writer.writerow([_local(r.at), r.actor, r.action, r.target or "", r.channel or "", r.client_address or "",
                                 scrub_text(json.dumps(r.details or {}, ensure_ascii=False))])
            with repo.audit_origin("web", client_address(request)):
                repo.record(session, viewer.code, "audit.export", details={"action": action or None})
            return "\ufeff" + out.getvalue()  # a BOM: Excel opens UTF-8 CSV correctly

    text = await asyncio.to_thread(build)
    stamp = utcnow().astimezone(CHINA_TZ).strftime("%Y%m%d")
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'})


def routes() -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/admin", home),
        ("GET", "/admin/", home),
        ("GET", "/admin/documents", documents),
        ("POST", "/admin/documents/upload", documents_upload),
        ("POST", "/admin/documents/confirm", documents_confirm),
        ("POST", "/admin/documents/delete", documents_delete),
        ("GET", "/admin/documents/history", documents_history),
        ("POST", "/admin/documents/rollback", documents_rollback),
        ("GET", "/admin/hittest", hittest),
        ("GET", "/admin/referrals", referrals),
        ("GET", "/admin/referrals/export.{fmt:csv|fhir}", referrals_export),
        ("GET", "/admin/referrals/{number}", referral_detail),
        ("POST", "/admin/referrals/{number}", referral_detail),
        ("GET", "/admin/meetings", meetings),
        ("GET", "/admin/meetings/new", meetings_create),
        ("POST", "/admin/meetings/new", meetings_create),
        ("POST", "/admin/meetings/{meeting_id:\\d+}/cancel", meetings_cancel),
        ("GET", "/admin/meetings/{meeting_id:\\d+}/edit", meetings_edit),
        ("POST", "/admin/meetings/{meeting_id:\\d+}/edit", meetings_edit),
        ("GET", "/admin/quotas", quotas),
        ("POST", "/admin/quotas/import", quotas_import),
        ("GET", "/admin/people", people),
        ("POST", "/admin/people/{code}/{action:invite|revoke|roles}", people_action),
        ("GET", "/admin/audit", audit),
        ("GET", "/admin/audit/export.csv", audit_export),
    ]


__all__ = ["CONSOLE_CTX_KEY", "CONSOLE_ENGINE_KEY", "routes"]
