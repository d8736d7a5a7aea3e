"""Import the staff directory (consortia → institutions → staff) from YAML or CSV.

``import_directory(session, path)`` validates the whole file first and imports nothing if any
item is bad; the report then lists every problem with its line number. A good file is upserted:
consortia by ``code``, institutions by ``name`` within their consortium, staff by ``code``, so
importing the same file twice changes nothing the second time. Nothing is deleted: people and
institutions missing from the file stay as they are (deactivate someone with ``active: false``).
Role changes of existing staff are written to the audit log as ``role_change``. The function
flushes but does not commit: the caller commits (or rolls back on an exception).

YAML format
-----------
Either nested::

    consortia:
      - code: songyuan                      # required, lower-case letters/digits/_/-
        name: 松原吉林油田医院城市医疗集团      # required
        city: 松原                            # optional
        referral_prefix: SY                   # optional: 2–4 capital letters that start its referral
                                              # numbers (SY-2026-000123); unique among consortia;
                                              # default: initials of the name's first two characters
        institutions:
          - name: 松原吉林油田医院             # required, unique within the consortium
            level: 三级                       # 三级/二级/一级/基层/专科 (required for a new institution)
            is_lead: true                     # optional, default false; at most one lead per consortium
            parent: 松原吉林油田医院           # optional; default: the consortium's lead hospital
            departments: [心血管内科, 医务科]   # optional list
            medical_staff: 620                # optional: number of medical staff (quota rules that ask
                                              # for a share of the staff, e.g. 5% sent down each year)
            receives_referrals: true          # optional true/false (是/否): whether referrals may be sent
                                              # here; not given = by kind (clinical institutions do, a
                                              # 疾控中心 or 妇幼保健计划生育服务中心 not, see
                                              # handlers/referral/rules_default.yaml)
            staff:
              - code: dr_wang_sy              # required, lower-case letters/digits/_ (used by --as, invites)
                name: 王某某                   # required
                roles: [physician]            # required: physician / liaison / admin (or 医生/联络员/管理员)
                department: 心血管内科          # optional
                wecom_userid: wangmoumou      # optional, unique
                telegram_user_id: 123456789   # optional, unique
                phone: "139****0000"          # optional
                active: true                  # optional, default true

or as three top-level lists (which may also be combined with the nested form)::

    consortia:    [{code, name, city, referral_prefix}]
    institutions: [{consortium: <code>, name, level, is_lead, parent, departments, receives_referrals}]
    staff:        [{consortium: <code>, institution: <name>, code, name, roles, ...}]

Errors point at the line where the offending item starts.

CSV format
----------
UTF-8 (with or without BOM) or GB18030 as saved by Excel; one staff member per row; the first
row names the columns (English names below, or the Chinese alias in brackets)::

    consortium [医联体]        consortium code; required
    institution [机构]         institution name; required
    level [级别]               三级/二级/一级/基层/专科; required on the first row of a new institution
    is_lead [牵头]             true/false, 是/否, 1/0; empty = false for a new institution
    staff_code [人员代码]       required
    name [姓名]                required
    roles [角色]               several separated by ; or | (e.g. ``physician;liaison``); required
    wecom_userid [企业微信]     optional
    telegram_user_id [Telegram] optional
    department [科室]          optional
    phone [电话]               optional
    consortium_name [医联体名称] required only for a consortium not yet in the database
    city [城市], parent [上级机构], departments [机构科室] (; separated), active [启用]: optional
    receives_referrals [接收转诊]  true/false, 是/否; empty = by kind (see the YAML key)
    referral_prefix [转诊单号前缀]  2–4 capital letters (see the YAML key); optional

Rows of the same institution must agree on its level/is_lead/receives_referrals, rows of the same
consortium on its name/city/referral_prefix. Line numbers are the file's
physical lines (the header is line 1).

Empty optional values never erase what is stored (a Telegram binding made by an invite
survives a re-import of a file without Telegram ids).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import yaml
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage.models.directory import LEVELS, ROLE_LABELS_ZH, ROLES, Consortium, Institution, Staff
from storage.referrals import referral_prefix
from storage.repositories import record

Format = Literal["yaml", "csv"]


# ------------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class ImportIssue:
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"第 {self.line} 行：{self.message}" if self.line else self.message


@dataclass
class EntityCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def changed(self) -> int:
        return self.created + self.updated


@dataclass
class ImportReport:
    source: str
    format: Format | None = None
    errors: list[ImportIssue] = field(default_factory=list)
    warnings: list[ImportIssue] = field(default_factory=list)
    consortia: EntityCounts = field(default_factory=EntityCounts)
    institutions: EntityCounts = field(default_factory=EntityCounts)
    staff: EntityCounts = field(default_factory=EntityCounts)
    #: (staff code, old roles, new roles) for existing staff whose roles changed.
    role_changes: list[tuple[str, list[str], list[str]]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        return bool(self.consortia.changed or self.institutions.changed or self.staff.changed)

    def error(self, line: int | None, message: str) -> None:
        self.errors.append(ImportIssue(line, message))

    def warn(self, line: int | None, message: str) -> None:
        self.warnings.append(ImportIssue(line, message))

    def summary_zh(self) -> str:
        if self.errors:
            lines = [f"导入失败：{self.source} 中有 {len(self.errors)} 处错误，未导入任何数据。"]
            lines += [f"  - {e}" for e in self.errors]
            return "\n".join(lines)
        verb = "校验通过（未写入）" if self.dry_run else "导入完成"
        def fmt(label: str, c: EntityCounts) -> str:
            return f"{label}：新增 {c.created}，更新 {c.updated}，未变 {c.unchanged}"
        lines = [f"{verb}：{self.source}",
                 "  " + fmt("医联体", self.consortia),
                 "  " + fmt("机构", self.institutions),
                 "  " + fmt("人员", self.staff)]
        for code, old, new in self.role_changes:
            lines.append(f"  角色变更 {code}：{_roles_zh(old)} → {_roles_zh(new)}")
        lines += [f"  提示：{w}" for w in self.warnings]
        return "\n".join(lines)


def _roles_zh(roles: Iterable[str]) -> str:
    return "、".join(ROLE_LABELS_ZH.get(r, r) for r in roles) or "无"


class DirectoryImportError(Exception):
    """Raised by ``import_directory(..., raise_on_error=True)``; ``report`` has the details."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__(report.summary_zh())
        self.report = report


# ------------------------------------------------------------------------------------------------
# parsed records (None = "not given": keep what is stored / use the default)


@dataclass
class _ConsortiumRec:
    line: int
    code: str
    name: str | None = None
    city: str | None = None
    referral_prefix: str | None = None


@dataclass
class _InstitutionRec:
    line: int
    consortium: str
    name: str
    level: str | None = None
    is_lead: bool | None = None
    parent: str | None = None
    departments: list[str] | None = None
    receives_referrals: bool | None = None
    medical_staff: int | None = None


@dataclass
class _StaffRec:
    line: int
    consortium: str
    institution: str
    code: str
    name: str
    roles: list[str]
    department: str | None = None
    wecom_userid: str | None = None
    telegram_user_id: int | None = None
    phone: str | None = None
    active: bool | None = None


@dataclass
class _Parsed:
    consortia: list[_ConsortiumRec] = field(default_factory=list)
    institutions: list[_InstitutionRec] = field(default_factory=list)
    staff: list[_StaffRec] = field(default_factory=list)
    #: CSV repeats consortium/institution on every row; YAML must not.
    repeats_allowed: bool = False


# ------------------------------------------------------------------------------------------------
# field parsing (each returns a value or raises _Bad with a Chinese message)


class _Bad(ValueError):
    pass


_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{1,49}$")
_CONSORTIUM_CODE_RE = re.compile(r"^[a-z][a-z0-9_-]{1,49}$")
_WECOM_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_PHONE_RE = re.compile(r"^[0-9*+\-() ]{3,30}$")
_PREFIX_RE = re.compile(r"^[A-Z]{2,4}$")

_ROLE_ALIASES = {
    "physician": "physician", "doctor": "physician", "医生": "physician", "医师": "physician",
    "liaison": "liaison", "联络员": "liaison", "联系人": "liaison",
    "admin": "admin", "administrator": "admin", "管理员": "admin",
}
_LEVEL_ALIASES = {
    "三甲": "三级", "三乙": "三级", "三级甲等": "三级", "三级乙等": "三级",
    "二甲": "二级", "二乙": "二级", "二级甲等": "二级", "二级乙等": "二级",
    "一级甲等": "一级", "社区": "基层", "卫生院": "基层",
}
_TRUE = {"true", "yes", "y", "t", "1", "是", "牵头", "启用", "on"}
_FALSE = {"false", "no", "n", "f", "0", "否", "停用", "off"}


def _text(value: Any, what: str, *, required: bool = False, max_len: int = 200) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Bad(f"缺少{what}")
        return None
    if isinstance(value, (dict, list)):
        raise _Bad(f"{what}应为文字，而不是列表或映射")
    text = str(value).strip()
    if len(text) > max_len:
        raise _Bad(f"{what}过长（最多 {max_len} 个字符）")
    return text


def _code(value: Any, what: str, pattern: re.Pattern[str]) -> str:
    text = _text(value, what, required=True, max_len=50)
    assert text is not None
    text = text.lower()
    if not pattern.match(text):
        raise _Bad(f"{what}“{text}”不合法：只能用小写字母、数字和下划线，且以字母开头")
    return text


def _count_value(value: Any, what: str) -> int | None:
    """A head count: a whole number from 1 to 1,000,000, or nothing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _Bad(f"{what}“{value}”应为正整数") from None
    if not 1 <= number <= 1_000_000:
        raise _Bad(f"{what}“{value}”应在 1 到 1000000 之间")
    return number


def _bool(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Bad(f"{what}“{value}”无法识别，请填写 true/false（或 是/否）")


def _level(value: Any) -> str | None:
    text = _text(value, "级别", max_len=20)
    if text is None:
        return None
    text = _LEVEL_ALIASES.get(text, text)
    if text not in LEVELS:
        raise _Bad(f"级别“{text}”无效，应为 {'/'.join(LEVELS)} 之一")
    return text


def _roles(value: Any) -> list[str]:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Bad("缺少角色（roles），应为 physician/liaison/admin 中的一个或多个")
    items = re.split(r"[;|；、，,\s]+", value) if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _Bad("角色（roles）应为列表")
    roles: set[str] = set()
    for item in items:
        name = str(item).strip()
        if not name:
            continue
        role = _ROLE_ALIASES.get(name.lower())
        if role is None:
            raise _Bad(f"角色“{name}”无效，应为 physician（医生）、liaison（联络员）、admin（管理员）之一")
        roles.add(role)
    if not roles:
        raise _Bad("缺少角色（roles）")
    return [r for r in ROLES if r in roles]


def _telegram_id(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise _Bad("telegram_user_id 应为数字")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _Bad(f"telegram_user_id“{value}”应为纯数字") from None
    if not 0 < number < 2**53:
        raise _Bad(f"telegram_user_id“{value}”超出范围")
    return number


def _wecom(value: Any) -> str | None:
    text = _text(value, "企业微信账号（wecom_userid）", max_len=64)
    if text is not None and not _WECOM_RE.match(text):
        raise _Bad(f"企业微信账号“{text}”不合法：只能包含字母、数字和 _ . @ -")
    return text


def _phone(value: Any) -> str | None:
    text = _text(value, "电话", max_len=30)
    if text is not None and (not _PHONE_RE.match(text) or sum(c.isdigit() for c in text) < 3):
        raise _Bad("电话格式不正确")
    return text


def _prefix(value: Any) -> str | None:
    """A consortium's referral-number prefix: 2–4 letters A–Z (lower case is taken as upper)."""
    text = _text(value, "转诊单号前缀（referral_prefix）", max_len=20)
    if text is None:
        return None
    upper = text.upper()
    if not _PREFIX_RE.match(upper):
        raise _Bad(f"转诊单号前缀（referral_prefix）“{text}”不合法：应为 2–4 个大写英文字母，例如 ZD")
    return upper


def _departments(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = re.split(r"[;|；、，,]+", value) if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _Bad("科室列表（departments）应为列表")
    out: list[str] = []
    for item in items:
        name = _text(item, "科室名称", max_len=100)
        if name and name not in out:
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------------
# YAML


class _LineDict(dict):  # type: ignore[type-arg]
    line: int = 0


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> Any:
    data = _LineDict()
    data.line = node.start_mark.line + 1
    yield data
    data.update(loader.construct_mapping(node))


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)

_CONSORTIUM_KEYS = {"code", "name", "city", "referral_prefix", "institutions"}
_INSTITUTION_KEYS = {"consortium", "name", "level", "is_lead", "parent", "departments", "receives_referrals",
                     "medical_staff", "staff"}
_STAFF_KEYS = {"consortium", "institution", "code", "name", "roles", "department", "wecom_userid",
               "telegram_user_id", "phone", "active"}


def _items(value: Any, what: str, line: int, report: ImportReport) -> list[_LineDict]:
    if value is None:
        return []
    if not isinstance(value, list):
        report.error(line, f"{what}应为列表（每项以“- ”开头）")
        return []
    out = []
    for item in value:
        if isinstance(item, _LineDict):
            out.append(item)
        else:
            report.error(line, f"{what}中有一项不是映射（key: value 形式）：{item!r}")
    return out


def _unknown_keys(item: _LineDict, allowed: set[str], what: str, report: ImportReport) -> None:
    extra = sorted(str(k) for k in item if k not in allowed)
    if extra:
        report.error(item.line, f"{what}含有无法识别的字段：{', '.join(extra)}（允许：{', '.join(sorted(allowed))}）")


def _parse_yaml(text: str, report: ImportReport) -> _Parsed | None:
    """Records of every well-formed item; None if the file as a whole cannot be read."""
    parsed = _Parsed()
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        report.error(mark.line + 1 if mark else None, f"YAML 语法错误：{problem}")
        return None
    if not isinstance(doc, _LineDict):
        report.error(1, "文件顶层应为映射，包含 consortia / institutions / staff")
        return None
    _unknown_keys(doc, {"consortia", "institutions", "staff"}, "文件顶层", report)

    def consortium(item: _LineDict) -> _ConsortiumRec | None:
        _unknown_keys(item, _CONSORTIUM_KEYS, "医联体", report)
        try:
            return _ConsortiumRec(
                line=item.line,
                code=_code(item.get("code"), "医联体代码（code）", _CONSORTIUM_CODE_RE),
                name=_text(item.get("name"), "医联体名称（name）", required=True),
                city=_text(item.get("city"), "城市（city）", max_len=100),
                referral_prefix=_prefix(item.get("referral_prefix")),
            )
        except _Bad as bad:
            report.error(item.line, str(bad))
            return None

    def institution(item: _LineDict, consortium_code: str | None) -> _InstitutionRec | None:
        _unknown_keys(item, _INSTITUTION_KEYS - ({"consortium"} if consortium_code else set()), "机构", report)
        try:
            code = consortium_code or _code(item.get("consortium"), "所属医联体代码（consortium）",
                                            _CONSORTIUM_CODE_RE)
            return _InstitutionRec(
                line=item.line,
                consortium=code,
                name=_text(item.get("name"), "机构名称（name）", required=True) or "",
                level=_level(item.get("level")),
                is_lead=_bool(item.get("is_lead"), "is_lead"),
                parent=_text(item.get("parent"), "上级机构（parent）"),
                departments=_departments(item.get("departments")),
                receives_referrals=_bool(item.get("receives_referrals"), "receives_referrals"),
                medical_staff=_count_value(item.get("medical_staff"), "医务人员数（medical_staff）"),
            )
        except _Bad as bad:
            report.error(item.line, str(bad))
            return None

    def staff(item: _LineDict, consortium_code: str | None, institution_name: str | None) -> None:
        allowed = _STAFF_KEYS - ({"consortium", "institution"} if institution_name else set())
        _unknown_keys(item, allowed, "人员", report)
        try:
            parsed.staff.append(_StaffRec(
                line=item.line,
                consortium=consortium_code or _code(item.get("consortium"), "所属医联体代码（consortium）",
                                                    _CONSORTIUM_CODE_RE),
                institution=institution_name or _text(item.get("institution"), "所属机构（institution）",
                                                      required=True) or "",
                code=_code(item.get("code"), "人员代码（code）", _CODE_RE),
                name=_text(item.get("name"), "姓名（name）", required=True, max_len=100) or "",
                roles=_roles(item.get("roles")),
                department=_text(item.get("department"), "科室（department）", max_len=100),
                wecom_userid=_wecom(item.get("wecom_userid")),
                telegram_user_id=_telegram_id(item.get("telegram_user_id")),
                phone=_phone(item.get("phone")),
                active=_bool(item.get("active"), "active"),
            ))
        except _Bad as bad:
            report.error(item.line, str(bad))

    def institution_with_staff(item: _LineDict, consortium_code: str | None) -> None:
        rec = institution(item, consortium_code)
        if rec is None:  # its staff cannot be placed; the institution's own error is reported
            return
        parsed.institutions.append(rec)
        for s in _items(item.get("staff"), "人员列表（staff）", item.line, report):
            staff(s, rec.consortium, rec.name)

    for item in _items(doc.get("consortia"), "consortia", doc.line, report):
        rec = consortium(item)
        if rec is not None:
            parsed.consortia.append(rec)
        for inst in _items(item.get("institutions"), "机构列表（institutions）", item.line, report):
            if rec is None:
                continue
            institution_with_staff(inst, rec.code)
    for item in _items(doc.get("institutions"), "institutions", doc.line, report):
        institution_with_staff(item, None)
    for item in _items(doc.get("staff"), "staff", doc.line, report):
        staff(item, None, None)
    return parsed


# ------------------------------------------------------------------------------------------------
# CSV

_CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "consortium": ("consortium", "consortium_code", "医联体", "医联体代码", "集团代码"),
    "institution": ("institution", "机构", "机构名称", "单位", "单位名称"),
    "level": ("level", "级别", "机构级别"),
    "is_lead": ("is_lead", "lead", "牵头", "是否牵头", "牵头医院"),
    "staff_code": ("staff_code", "code", "人员代码", "代码", "工号"),
    "name": ("name", "姓名"),
    "roles": ("roles", "role", "角色"),
    "wecom_userid": ("wecom_userid", "wecom", "企业微信", "企业微信账号"),
    "telegram_user_id": ("telegram_user_id", "telegram", "telegram_id"),
    "department": ("department", "科室"),
    "phone": ("phone", "电话", "手机", "联系电话"),
    "consortium_name": ("consortium_name", "医联体名称", "集团名称"),
    "city": ("city", "城市"),
    "parent": ("parent", "上级机构", "牵头医院名称"),
    "departments": ("departments", "机构科室"),
    "receives_referrals": ("receives_referrals", "接收转诊", "是否接收转诊"),
    "referral_prefix": ("referral_prefix", "转诊单号前缀", "单号前缀"),
    "active": ("active", "启用", "是否启用"),
}
_CSV_REQUIRED = ("consortium", "institution", "staff_code", "name", "roles")


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def _parse_csv(text: str, report: ImportReport) -> _Parsed | None:
    """Records of every well-formed row; None if the header is unusable."""
    parsed = _Parsed(repeats_allowed=True)
    text = text.lstrip("\ufeff")
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",\t;") if sample.strip() else csv.excel
        if dialect.delimiter == ";" and "," in sample.splitlines()[0]:
            dialect = csv.excel
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader)
    except StopIteration:
        report.error(None, "CSV 文件为空")
        return None
    except csv.Error as exc:
        report.error(1, f"CSV 格式错误：{exc}")
        return None
    alias_to_key = {alias.lower(): key for key, aliases in _CSV_COLUMNS.items() for alias in aliases}
    index: dict[str, int] = {}
    for pos, col in enumerate(header):
        key = alias_to_key.get(col.strip().lower())
        if key is None:
            if col.strip():
                report.error(1, f"无法识别的列名“{col.strip()}”")
            continue
        if key in index:
            report.error(1, f"列“{col.strip()}”重复")
        index[key] = pos
    missing = [k for k in _CSV_REQUIRED if k not in index]
    if missing:
        report.error(1, f"缺少必需的列：{', '.join(missing)}")
    if report.errors:
        return None

    previous_end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.error(previous_end + 1, f"CSV 格式错误：{exc}")
            break
        line, previous_end = previous_end + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            report.error(line, f"本行有 {len(row)} 列，比表头多（表头 {len(header)} 列），请检查是否有未加引号的逗号")
            continue

        def cell(key: str) -> str | None:
            pos = index.get(key)
            if pos is None or pos >= len(row):
                return None
            return row[pos].strip() or None

        try:
            consortium = _code(cell("consortium"), "医联体代码（consortium）", _CONSORTIUM_CODE_RE)
            institution = _text(cell("institution"), "机构名称（institution）", required=True) or ""
            parsed.consortia.append(_ConsortiumRec(
                line=line, code=consortium,
                name=_text(cell("consortium_name"), "医联体名称（consortium_name）"),
                city=_text(cell("city"), "城市（city）", max_len=100),
                referral_prefix=_prefix(cell("referral_prefix")),
            ))
            parsed.institutions.append(_InstitutionRec(
                line=line, consortium=consortium, name=institution,
                level=_level(cell("level")),
                is_lead=_bool(cell("is_lead"), "is_lead"),
                parent=_text(cell("parent"), "上级机构（parent）"),
                departments=_departments(cell("departments")),
                receives_referrals=_bool(cell("receives_referrals"), "receives_referrals"),
            ))
            parsed.staff.append(_StaffRec(
                line=line, consortium=consortium, institution=institution,
                code=_code(cell("staff_code"), "人员代码（staff_code）", _CODE_RE),
                name=_text(cell("name"), "姓名（name）", required=True, max_len=100) or "",
                roles=_roles(cell("roles")),
                department=_text(cell("department"), "科室（department）", max_len=100),
                wecom_userid=_wecom(cell("wecom_userid")),
                telegram_user_id=_telegram_id(cell("telegram_user_id")),
                phone=_phone(cell("phone")),
                active=_bool(cell("active"), "active"),
            ))
        except _Bad as bad:
            report.error(line, str(bad))
    return parsed


# ------------------------------------------------------------------------------------------------
# validation against the file itself and the database


@dataclass
class _Plan:
    consortia: dict[str, _ConsortiumRec]
    institutions: dict[tuple[str, str], _InstitutionRec]
    staff: dict[str, _StaffRec]
    #: (consortium code, institution name) -> parent institution name or None (resolved)
    parents: dict[tuple[str, str], str | None]
    existing_consortia: dict[str, Consortium]
    existing_institutions: dict[tuple[str, str], Institution]
    existing_staff: dict[str, Staff]


def _merge(target: Any, rec: Any, fields: Iterable[str], label: str, report: ImportReport) -> None:
    """CSV: fold a repeated consortium/institution row into the first one, flagging conflicts."""
    for name in fields:
        new, old = getattr(rec, name), getattr(target, name)
        if new is None:
            continue
        if old is None:
            setattr(target, name, new)
        elif old != new:
            report.error(rec.line, f"{label}的 {name} 为“{_show(new)}”，与第 {target.line} 行的“{_show(old)}”不一致")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, list):
        return "；".join(map(str, value))
    return str(value)


def _check_prefixes(session: Session, consortia: dict[str, _ConsortiumRec], report: ImportReport) -> None:
    """A referral number must name its consortium: a prefix given in the file must differ from
    every other consortium's (stored, given, or derived from the name when none is set)."""
    given = {code: rec for code, rec in consortia.items() if rec.referral_prefix is not None}
    if not given:
        return
    effective: dict[str, str] = {}
    for row in session.scalars(select(Consortium)):
        effective[row.code] = referral_prefix(row)
    for code, rec in consortia.items():
        if rec.referral_prefix is not None:
            effective[code] = rec.referral_prefix
        elif code not in effective and rec.name:
            effective[code] = referral_prefix(SimpleNamespace(code=code, name=rec.name,  # type: ignore[arg-type]
                                                              referral_prefix=None))
    for code, rec in sorted(given.items(), key=lambda kv: kv[1].line):
        others = sorted(c for c, prefix in effective.items() if prefix == rec.referral_prefix and c != code)
        if others:
            report.error(rec.line, f"转诊单号前缀 {rec.referral_prefix} 已被医联体 {'、'.join(others)} 使用"
                                   "（或由其名称得出），每个医联体的前缀必须不同")


def _validate(session: Session, parsed: _Parsed, report: ImportReport) -> _Plan:
    # -- consortia
    consortia: dict[str, _ConsortiumRec] = {}
    for rec in parsed.consortia:
        first = consortia.get(rec.code)
        if first is None:
            consortia[rec.code] = rec
        elif parsed.repeats_allowed:
            _merge(first, rec, ("name", "city", "referral_prefix"), f"医联体 {rec.code} ", report)
        else:
            report.error(rec.line, f"医联体代码 {rec.code} 重复（第 {first.line} 行已定义）")

    codes = set(consortia) | {r.consortium for r in parsed.institutions} | {r.consortium for r in parsed.staff}
    existing_consortia = {c.code: c for c in session.scalars(select(Consortium).where(Consortium.code.in_(codes)))}
    for code, rec in consortia.items():
        if rec.name is None and code not in existing_consortia:
            report.error(rec.line, f"医联体 {code} 尚不存在，请提供其名称（consortium_name 列）")
    _check_prefixes(session, consortia, report)

    known_consortia = set(consortia) | set(existing_consortia)
    existing_institutions = {
        (i.consortium.code, i.name): i
        for i in session.scalars(
            select(Institution).join(Consortium).where(Consortium.code.in_(codes))
        ).unique()
    }

    # -- institutions
    institutions: dict[tuple[str, str], _InstitutionRec] = {}
    for rec in parsed.institutions:
        if rec.consortium not in known_consortia:
            report.error(rec.line, f"机构“{rec.name}”所属的医联体代码 {rec.consortium} 不存在")
            continue
        key = (rec.consortium, rec.name)
        first = institutions.get(key)
        if first is None:
            institutions[key] = rec
        elif parsed.repeats_allowed:
            _merge(first, rec, ("level", "is_lead", "parent", "departments", "receives_referrals", "medical_staff"),
                   f"机构“{rec.name}”",
                   report)
        else:
            report.error(rec.line, f"机构“{rec.name}”在医联体 {rec.consortium} 中重复（第 {first.line} 行已定义）")
    for key, rec in institutions.items():
        if rec.level is None and key not in existing_institutions:
            report.error(rec.line, f"新机构“{rec.name}”缺少级别（level），应为 {'/'.join(LEVELS)} 之一")

    # Effective view of each consortium after the import: DB institutions overlaid with the file.
    def lead_flag(key: tuple[str, str]) -> bool:
        rec = institutions.get(key)
        if rec is not None and rec.is_lead is not None:
            return rec.is_lead
        existing = existing_institutions.get(key)
        return bool(existing.is_lead) if existing is not None else False

    all_keys = set(existing_institutions) | set(institutions)
    leads: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(all_keys):
        if lead_flag(key):
            leads.setdefault(key[0], []).append(key)
    for code, keys in leads.items():
        if len(keys) > 1:
            names = "、".join(k[1] for k in keys)
            line = max((institutions[k].line for k in keys if k in institutions), default=None)
            report.error(line, f"医联体 {code} 有多个牵头机构（{names}），每个医联体只能有一个牵头机构")

    parents: dict[tuple[str, str], str | None] = {}
    for key, rec in institutions.items():
        code, name = key
        if rec.parent is not None:
            if rec.parent == name:
                report.error(rec.line, f"机构“{name}”的上级机构不能是它自己")
            elif (code, rec.parent) not in all_keys:
                report.error(rec.line, f"机构“{name}”的上级机构“{rec.parent}”不在医联体 {code} 中")
            parents[key] = rec.parent
        elif lead_flag(key):
            parents[key] = None
        else:
            lead = leads.get(code, [])
            parents[key] = lead[0][1] if len(lead) == 1 else None

    # -- staff
    staff: dict[str, _StaffRec] = {}
    wecom_seen: dict[str, _StaffRec] = {}
    telegram_seen: dict[int, _StaffRec] = {}
    for rec in parsed.staff:
        first = staff.get(rec.code)
        if first is not None:
            report.error(rec.line, f"人员代码 {rec.code} 重复（第 {first.line} 行已使用）")
            continue
        staff[rec.code] = rec
        if rec.consortium not in known_consortia:
            report.error(rec.line, f"人员 {rec.code} 所属的医联体代码 {rec.consortium} 不存在")
        elif (rec.consortium, rec.institution) not in all_keys:
            report.error(rec.line, f"人员 {rec.code} 所属机构“{rec.institution}”不在医联体 {rec.consortium} 中")
        if rec.wecom_userid is not None:
            other = wecom_seen.setdefault(rec.wecom_userid, rec)
            if other is not rec:
                report.error(rec.line, f"企业微信账号 {rec.wecom_userid} 与第 {other.line} 行的人员 {other.code} 重复")
        if rec.telegram_user_id is not None:
            other = telegram_seen.setdefault(rec.telegram_user_id, rec)
            if other is not rec:
                report.error(rec.line, f"Telegram ID {rec.telegram_user_id} 与第 {other.line} 行的人员 {other.code} 重复")

    existing_staff: dict[str, Staff] = {}
    if staff:
        conditions: list[Any] = [Staff.code.in_(list(staff))]
        if wecom_seen:
            conditions.append(Staff.wecom_userid.in_(list(wecom_seen)))
        if telegram_seen:
            conditions.append(Staff.telegram_user_id.in_(list(telegram_seen)))
        holders = list(session.scalars(select(Staff).where(or_(*conditions))).unique())
        existing_staff = {s.code: s for s in holders if s.code in staff}
        for holder in holders:
            if holder.wecom_userid in wecom_seen and wecom_seen[holder.wecom_userid].code != holder.code:
                rec = wecom_seen[holder.wecom_userid]
                report.error(rec.line, f"企业微信账号 {rec.wecom_userid} 已属于人员 {holder.code}（{holder.name}）")
            if holder.telegram_user_id in telegram_seen and telegram_seen[holder.telegram_user_id].code != holder.code:
                rec = telegram_seen[holder.telegram_user_id]
                report.error(rec.line, f"Telegram ID {rec.telegram_user_id} 已绑定人员 {holder.code}（{holder.name}）")

    # Warnings only: a department unknown to the institution's list.
    for rec in staff.values():
        key = (rec.consortium, rec.institution)
        known = institutions[key].departments if key in institutions else None
        if known is None and key in existing_institutions:
            known = existing_institutions[key].departments
        if rec.department and known and rec.department not in known:
            report.warn(rec.line, f"人员 {rec.code} 的科室“{rec.department}”不在机构“{rec.institution}”的科室列表中")

    return _Plan(consortia, institutions, staff, parents, existing_consortia, existing_institutions, existing_staff)


# ------------------------------------------------------------------------------------------------
# apply


def _assign(obj: Any, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    return changed


def _count(counts: EntityCounts, created: bool, changed: bool) -> None:
    if created:
        counts.created += 1
    elif changed:
        counts.updated += 1
    else:
        counts.unchanged += 1


def _apply(session: Session, plan: _Plan, report: ImportReport, actor: str, *, create_only: bool = False) -> None:
    if create_only:
        # Seeding: what exists stays exactly as the admins made it; only missing rows are added.
        report.consortia.unchanged += sum(k in plan.existing_consortia for k in plan.consortia)
        report.institutions.unchanged += sum(k in plan.existing_institutions for k in plan.institutions)
        report.staff.unchanged += sum(k in plan.existing_staff for k in plan.staff)
        plan.consortia = {k: v for k, v in plan.consortia.items() if k not in plan.existing_consortia}
        plan.institutions = {k: v for k, v in plan.institutions.items() if k not in plan.existing_institutions}
        plan.parents = {k: v for k, v in plan.parents.items() if k in plan.institutions}
        plan.staff = {k: v for k, v in plan.staff.items() if k not in plan.existing_staff}
    consortia = dict(plan.existing_consortia)
    for code, rec in plan.consortia.items():
        row = consortia.get(code)
        values = {"name": rec.name} if rec.name is not None else {}
        if rec.city is not None:
            values["city"] = rec.city
        if rec.referral_prefix is not None:
            values["referral_prefix"] = rec.referral_prefix
        if row is None:
            row = Consortium(code=code, **values)
            session.add(row)
            consortia[code] = row
            _count(report.consortia, True, True)
        else:
            _count(report.consortia, False, _assign(row, values))
    session.flush()

    institutions = dict(plan.existing_institutions)
    status: dict[tuple[str, str], tuple[bool, bool]] = {}
    for key, rec in plan.institutions.items():
        row = institutions.get(key)
        values: dict[str, Any] = {}
        if rec.level is not None:
            values["level"] = rec.level
        if rec.is_lead is not None:
            values["is_lead"] = rec.is_lead
        if rec.departments is not None:
            values["departments"] = rec.departments
        if rec.receives_referrals is not None:
            values["receives_referrals"] = rec.receives_referrals
        if rec.medical_staff is not None:
            values["medical_staff"] = rec.medical_staff
        if row is None:
            values.setdefault("is_lead", False)
            values.setdefault("departments", [])
            row = Institution(consortium_id=consortia[key[0]].id, name=key[1], **values)
            session.add(row)
            institutions[key] = row
            status[key] = (True, True)
        else:
            status[key] = (False, _assign(row, values))
    session.flush()
    for key, parent_name in plan.parents.items():
        parent_id = institutions[(key[0], parent_name)].id if parent_name is not None else None
        if institutions[key].parent_id != parent_id:
            institutions[key].parent_id = parent_id
            created, _ = status[key]
            status[key] = (created, True)
    for created, changed in status.values():
        _count(report.institutions, created, changed)
    session.flush()

    for code, rec in plan.staff.items():
        row = plan.existing_staff.get(code)
        values = {"name": rec.name, "institution_id": institutions[(rec.consortium, rec.institution)].id}
        for name in ("department", "wecom_userid", "telegram_user_id", "phone", "active"):
            if getattr(rec, name) is not None:
                values[name] = getattr(rec, name)
        if row is None:
            values.setdefault("active", True)
            session.add(Staff(code=code, roles=rec.roles, **values))
            _count(report.staff, True, True)
            continue
        old_roles = list(row.roles or [])
        roles_changed = old_roles != rec.roles
        if roles_changed:
            row.roles = rec.roles
            report.role_changes.append((code, old_roles, list(rec.roles)))
            record(session, actor, "role_change", target=f"staff:{code}",
                   details={"from": old_roles, "to": list(rec.roles), "source": "directory_import"})
        changed = _assign(row, values) or roles_changed
        _count(report.staff, False, changed)
    session.flush()

    if report.changed:
        record(session, actor, "directory.import", target=report.source, details={
            "consortia": vars(report.consortia), "institutions": vars(report.institutions),
            "staff": vars(report.staff),
        })


# ------------------------------------------------------------------------------------------------
# entry points


def import_directory(session: Session, path: str | Path, *, actor: str = "cli", dry_run: bool = False,
                     raise_on_error: bool = False, create_only: bool = False) -> ImportReport:
    """Validate and import a directory file (``.yaml``/``.yml`` or ``.csv``); see the module doc.

    With ``dry_run`` only validation runs. With ``create_only`` (seeding sample data) existing
    consortia, institutions and staff are left untouched; only missing ones are added. With ``raise_on_error`` a bad file raises
    ``DirectoryImportError`` instead of returning a report with ``ok == False``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    fmt: Format | None = "yaml" if suffix in (".yaml", ".yml") else "csv" if suffix == ".csv" else None
    if fmt is None:
        report = ImportReport(source=path.name, dry_run=dry_run)
        report.error(None, f"不支持的文件类型“{path.suffix or path.name}”，请使用 .yaml/.yml 或 .csv")
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            report = ImportReport(source=path.name, format=fmt, dry_run=dry_run)
            report.error(None, f"无法读取文件 {path}：{exc.strerror or exc}")
        else:
            report = import_directory_data(session, data, fmt=fmt, source=path.name, actor=actor, dry_run=dry_run,
                                           create_only=create_only)
    if raise_on_error and not report.ok:
        raise DirectoryImportError(report)
    return report


def import_directory_data(session: Session, data: bytes | str, *, fmt: Format, source: str = "upload",
                          actor: str = "cli", dry_run: bool = False, create_only: bool = False) -> ImportReport:
    """Same as ``import_directory`` for content already in memory (e.g. a file sent to the bot)."""
    report = ImportReport(source=source, format=fmt, dry_run=dry_run)
    text = _decode(data) if isinstance(data, bytes) else data
    parsed = _parse_yaml(text, report) if fmt == "yaml" else _parse_csv(text, report)
    if parsed is not None:
        # Cross-item checks run even when some items were malformed, so that one pass over the
        # file reports every problem; malformed items themselves are left out of those checks.
        with session.no_autoflush:
            plan = _validate(session, parsed, report)
    report.errors.sort(key=lambda e: (e.line is None, e.line or 0))
    if parsed is None or report.errors or dry_run:
        return report
    _apply(session, plan, report, actor, create_only=create_only)
    return report
