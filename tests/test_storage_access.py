"""Who may do what: the rules in storage.access, on in-memory objects and on the sample directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import access
from storage.directory_import import import_directory
from storage.models import Consortium, Institution, Staff
from storage.repositories import get_staff_by_code

pytest_plugins = ("storage.testing",)  # db_engine, session fixtures

SAMPLE = Path(__file__).resolve().parents[1] / "storage" / "samples" / "directory.yaml"

SY = Consortium(id=1, code="songyuan", name="松原吉林油田医院城市医疗集团")
LC = Consortium(id=2, code="lincang", name="临沧市城市医疗集团")
SY_LEAD = Institution(id=10, consortium_id=1, consortium=SY, name="松原吉林油田医院", level="三级", is_lead=True)
SY_MEMBER = Institution(id=11, consortium_id=1, consortium=SY, name="哈达山卫生院", level="基层")
SY_OTHER = Institution(id=12, consortium_id=1, consortium=SY, name="繁荣社区卫生服务中心", level="基层")
LC_LEAD = Institution(id=20, consortium_id=2, consortium=LC, name="临沧市人民医院", level="三级", is_lead=True)


def person(roles: list[str], inst: Institution, *, active: bool = True) -> Staff:
    return Staff(code="x", name="某人", roles=roles, institution_id=inst.id, institution=inst, active=active)


DOCTOR = person(["physician"], SY_MEMBER)
LIAISON = person(["liaison"], SY_LEAD)
ADMIN = person(["admin"], SY_LEAD)
ADMIN_LC = person(["admin"], LC_LEAD)
RETIRED_ADMIN = person(["admin"], SY_LEAD, active=False)


def test_everyone_may_ask_policy_questions():
    for who in (None, DOCTOR, LIAISON, ADMIN, RETIRED_ADMIN):
        assert access.can_ask_policy(who)


def test_only_active_admins_manage_documents_and_users():
    assert access.can_manage_documents(ADMIN) and access.can_manage_users(ADMIN)
    for who in (None, DOCTOR, LIAISON, RETIRED_ADMIN):
        assert not access.can_manage_documents(who)
        assert not access.can_manage_users(who)
    # Scoped to a document's consortium when it has one.
    assert access.can_manage_documents(ADMIN, consortium_code="songyuan")
    assert not access.can_manage_documents(ADMIN_LC, consortium_code="songyuan")


@pytest.mark.parametrize(
    ("who", "sending", "receiving", "allowed"),
    [
        (DOCTOR, SY_MEMBER, SY_LEAD, False),     # a colleague's referral from their institution
        (DOCTOR, SY_LEAD, SY_MEMBER, False),     # ... or to it: only the sender and liaisons see it
        (DOCTOR, SY_LEAD, SY_OTHER, False),      # same consortium, not involved
        (LIAISON, SY_MEMBER, SY_LEAD, True),
        (LIAISON, SY_MEMBER, SY_OTHER, False),
        (ADMIN, SY_MEMBER, SY_OTHER, True),      # admins see their whole consortium
        (ADMIN_LC, SY_MEMBER, SY_OTHER, False),  # ... and nothing of another one
        (ADMIN_LC, SY_MEMBER, LC_LEAD, True),    # a cross-consortium referral into theirs
        (RETIRED_ADMIN, SY_MEMBER, SY_LEAD, False),
        (None, SY_MEMBER, SY_LEAD, False),
    ],
)
def test_referral_visibility(who, sending, receiving, allowed):
    assert access.can_view_referral(who, sending, receiving) is allowed
    if who is not None and not who.has_role("admin"):  # ids work the same for non-admins
        assert access.can_view_referral(who, sending.id, receiving.id) is allowed


def test_the_sender_sees_their_own_referral():
    sender = person(["physician"], SY_MEMBER)
    sender.id = 7
    assert access.can_view_referral(sender, SY_MEMBER, SY_LEAD, sender_id=7)
    assert not access.can_view_referral(sender, SY_MEMBER, SY_LEAD, sender_id=8)


def test_creating_referrals_needs_a_clinical_role():
    assert access.can_create_referral(DOCTOR) and access.can_create_referral(LIAISON)
    assert not access.can_create_referral(ADMIN) and not access.can_create_referral(None)


def test_admin_rule_with_bare_institution_ids_uses_the_directory(session):
    assert import_directory(session, SAMPLE).ok
    session.commit()
    admin = get_staff_by_code(session, "admin_sy")
    dr_member = get_staff_by_code(session, "dr_zhao_sy")   # 宁江吉林油田江北医院
    liaison_member = get_staff_by_code(session, "liaison_sun_sy")  # 哈达山卫生院
    lc_admin = get_staff_by_code(session, "admin_lc")
    sending, receiving = liaison_member.institution_id, dr_member.institution_id
    assert access.can_view_referral(admin, sending, receiving)
    assert not access.can_view_referral(lc_admin, sending, receiving)
    assert not access.can_view_referral(get_staff_by_code(session, "dr_wang_sy"), sending, receiving)
    assert not access.can_view_referral(dr_member, sending, receiving)  # a physician: only as the sender
    assert access.can_view_referral(dr_member, sending, receiving, sender_id=dr_member.id)
    assert access.can_view_referral(liaison_member, sending, receiving)
    session.expunge(admin)  # no session to resolve ids with: fail closed
    assert not access.can_view_referral(admin, sending, receiving)


def test_denial_messages_are_chinese():
    for msg in (access.DENIED_MANAGE_DOCUMENTS_ZH, access.DENIED_MANAGE_USERS_ZH,
                access.DENIED_VIEW_REFERRAL_ZH, access.DENIED_CREATE_REFERRAL_ZH, access.NOT_BOUND_ZH):
        assert "抱歉" in msg or "邀请码" in msg
