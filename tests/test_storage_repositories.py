"""Repositories as a handler uses them: look-ups, invites, dialog state, update dedupe, audit."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from storage import repositories as repo
from storage.db import make_session_factory
from storage.models import AuditLog, Consortium, Institution, InviteCode, Staff
from storage.types import utcnow

pytest_plugins = ("storage.testing",)  # db_engine, session fixtures


@pytest.fixture
def people(session):
    """One consortium, a lead hospital and a township health centre, three staff."""
    c = Consortium(code="songyuan", name="松原吉林油田医院城市医疗集团", city="松原")
    lead = Institution(consortium=c, name="松原吉林油田医院", level="三级", is_lead=True, departments=["心血管内科"])
    member = Institution(consortium=c, name="哈达山卫生院", level="基层", parent=lead)
    session.add_all([c, lead, member])
    session.flush()
    staff = {
        "dr": Staff(code="dr_wang_sy", name="王思远", roles=["physician"], institution_id=lead.id,
                    wecom_userid="wangsiyuan"),
        "liaison": Staff(code="liaison_sun_sy", name="孙晓禾", roles=["liaison"], institution_id=member.id),
        "gone": Staff(code="dr_gone_sy", name="钱离职", roles=["physician"], institution_id=member.id,
                      wecom_userid="qianlizhi", active=False),
    }
    session.add_all(staff.values())
    session.commit()
    return staff


# --- look-ups -------------------------------------------------------------------------------------

def test_staff_lookups_by_code_wecom_and_telegram(session, people):
    assert repo.get_staff_by_code(session, "dr_wang_sy").name == "王思远"
    assert repo.get_staff_by_code(session, " DR_WANG_SY ").code == "dr_wang_sy"
    found = repo.get_staff_by_wecom_userid(session, "wangsiyuan")
    assert found.institution.name == "松原吉林油田医院"
    assert found.institution.consortium.code == "songyuan"
    assert repo.get_staff_by_telegram_id(session, 42) is None
    assert repo.get_staff_by_code(session, "nobody") is None


def test_deactivated_staff_are_not_found_unless_asked(session, people):
    assert repo.get_staff_by_wecom_userid(session, "qianlizhi") is None
    assert repo.get_staff_by_code(session, "dr_gone_sy", active_only=False).active is False


def test_list_staff_by_role(session, people):
    assert [s.code for s in repo.list_staff(session, role="physician")] == ["dr_wang_sy"]
    lead_id = people["dr"].institution_id
    assert [s.code for s in repo.list_staff(session, institution_id=lead_id)] == ["dr_wang_sy"]
    assert len(repo.list_staff(session, consortium_id=people["dr"].consortium_id, active_only=False)) == 3


# --- invites --------------------------------------------------------------------------------------

def test_invite_binds_telegram_once_and_only_the_hash_is_stored(db_engine, people):
    factory = make_session_factory(db_engine)
    with factory.begin() as s:
        code = repo.create_invite(s, repo.get_staff_by_code(s, "dr_wang_sy"), created_by="admin_sy", ttl_hours=72)
    assert len(code) == repo.INVITE_LENGTH and set(code) <= set(repo.INVITE_ALPHABET)
    with factory() as s:
        assert code not in {row.code_hash for row in s.scalars(select(InviteCode))}

    with factory.begin() as s:  # a user types it in lower case with a dash
        result = repo.redeem_invite(s, f"{code[:4].lower()}-{code[4:].lower()}", 777001)
        assert result.ok and result.staff.code == "dr_wang_sy"
        assert "绑定成功" in result.message_zh and "王思远" in result.message_zh

    with factory.begin() as s:  # a second worker / later session sees the binding
        assert repo.get_staff_by_telegram_id(s, 777001).code == "dr_wang_sy"
        again = repo.redeem_invite(s, code, 777002)
        assert not again.ok and again.error is repo.RedeemError.USED
        assert "已被使用" in again.message_zh
        assert repo.get_staff_by_telegram_id(s, 777002) is None
        actions = [e.action for e in repo.audit_entries(s)]
        assert actions.count("bind") == 1 and "bind.failed" in actions and "invite.create" in actions


def test_expired_and_unknown_invites_are_rejected_with_distinct_errors(session, people):
    now = utcnow()
    code = repo.create_invite(session, people["dr"], created_by="cli", ttl_hours=1, now=now)
    late = repo.redeem_invite(session, code, 5001, now=now + timedelta(hours=1, seconds=1))
    assert late.error is repo.RedeemError.EXPIRED and "已过期" in late.message_zh
    assert people["dr"].telegram_user_id is None
    unknown = repo.redeem_invite(session, "ZZZZ9999", 5001, now=now)
    assert unknown.error is repo.RedeemError.UNKNOWN and "无效" in unknown.message_zh
    assert repo.redeem_invite(session, "", 5001).error is repo.RedeemError.UNKNOWN
    messages = {repo.REDEEM_MESSAGES_ZH[e] for e in repo.RedeemError}
    assert len(messages) == len(repo.RedeemError)


def test_telegram_account_of_someone_else_cannot_be_bound_again(session, people):
    first = repo.create_invite(session, people["dr"], created_by="cli")
    assert repo.redeem_invite(session, first, 9001).ok
    second = repo.create_invite(session, people["liaison"], created_by="cli")
    taken = repo.redeem_invite(session, second, 9001)
    assert taken.error is repo.RedeemError.TELEGRAM_ID_TAKEN
    assert people["liaison"].telegram_user_id is None
    # The refused code was not burnt: the liaison can still use it from their own account.
    assert repo.redeem_invite(session, second, 9002).ok


def test_rebinding_moves_a_staff_member_to_a_new_telegram_account(session, people):
    assert repo.redeem_invite(session, repo.create_invite(session, people["dr"], created_by="cli"), 1).ok
    result = repo.redeem_invite(session, repo.create_invite(session, people["dr"], created_by="cli"), 2)
    assert result.ok and result.replaced_previous
    assert repo.get_staff_by_telegram_id(session, 1) is None
    assert repo.unbind_telegram(session, people["dr"], actor="admin_sy")
    assert repo.get_staff_by_telegram_id(session, 2) is None


def test_invite_for_deactivated_staff_is_refused(session, people):
    code = repo.create_invite(session, people["gone"], created_by="cli")
    assert repo.redeem_invite(session, code, 3).error is repo.RedeemError.STAFF_INACTIVE


def test_concurrent_redeem_of_one_code_binds_once(db_engine, people):
    factory = make_session_factory(db_engine)
    with factory.begin() as s:
        code = repo.create_invite(s, repo.get_staff_by_code(s, "liaison_sun_sy"), created_by="cli")
    results: list[repo.RedeemResult] = []
    barrier = threading.Barrier(4)

    def worker(tg_id: int) -> None:
        barrier.wait()
        with factory.begin() as s:
            r = repo.redeem_invite(s, code, tg_id)
            results.append(r.error)

    threads = [threading.Thread(target=worker, args=(600 + i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join(timeout=30) for t in threads]
    assert results.count(None) == 1
    assert set(results) - {None} == {repo.RedeemError.USED}


# --- dialog state ---------------------------------------------------------------------------------

def test_dialog_survives_a_restart_and_times_out(db_engine):
    factory = make_session_factory(db_engine)
    t0 = utcnow()
    with factory.begin() as s:  # worker A
        repo.put_dialog(s, "telegram", 123, "referral.create", "ask_patient", {"dept": "心血管内科"}, ttl=30, now=t0)
    with factory.begin() as s:  # worker B, or after a restart
        state = repo.get_dialog(s, "telegram", "123", now=t0 + timedelta(minutes=10))
        assert isinstance(state, repo.Dialog)
        assert (state.dialog, state.step, state.data) == ("referral.create", "ask_patient", {"dept": "心血管内科"})
        repo.put_dialog(s, "telegram", 123, "referral.create", "confirm", {"dept": "心血管内科", "n": 2},
                        ttl=30, now=t0 + timedelta(minutes=10))
        assert repo.get_dialog(s, "telegram", 123, now=t0 + timedelta(minutes=11)).step == "confirm"
    with factory.begin() as s:
        # Each put restarts the clock: still alive 35 min after the start.
        assert isinstance(repo.get_dialog(s, "telegram", 123, now=t0 + timedelta(minutes=35)), repo.Dialog)
        expired = repo.get_dialog(s, "telegram", 123, now=t0 + timedelta(minutes=41))
        assert isinstance(expired, repo.DialogExpired)
        assert expired.dialog == "referral.create" and "超时" in expired.message_zh
    with factory.begin() as s:  # told once; afterwards there is simply no dialog
        assert repo.get_dialog(s, "telegram", 123, now=t0 + timedelta(minutes=42)) is None


def test_dialogs_are_per_channel_and_user_and_can_be_cleared(session):
    repo.put_dialog(session, "telegram", "1", "bind", "ask_code")
    repo.put_dialog(session, "wecom", "1", "upload", "ask_file", ttl=timedelta(minutes=5))
    assert repo.get_dialog(session, "telegram", "1").dialog == "bind"
    assert repo.get_dialog(session, "wecom", "1").dialog == "upload"
    assert repo.get_dialog(session, "telegram", "2") is None
    assert repo.clear_dialog(session, "telegram", "1") is True
    assert repo.clear_dialog(session, "telegram", "1") is False
    assert repo.get_dialog(session, "telegram", "1") is None
    assert repo.get_dialog(session, "wecom", "1").dialog == "upload"
    assert repo.purge_expired_dialogs(session, now=utcnow() + timedelta(minutes=6)) == 1


# --- update dedupe --------------------------------------------------------------------------------

def test_claim_update_is_true_once_then_false(db_engine):
    factory = make_session_factory(db_engine)
    with factory.begin() as s:
        assert repo.claim_update(s, "telegram", 1001) is True
        assert repo.claim_update(s, "telegram", 1001) is False
        assert repo.claim_update(s, "wecom", 1001) is True  # other channel, other namespace
    with factory.begin() as s:  # after a restart
        assert repo.claim_update(s, "telegram", "1001") is False
    with factory() as s:  # a rolled-back claim does not count
        assert repo.claim_update(s, "telegram", 1002) is True
        s.rollback()
    with factory.begin() as s:
        assert repo.claim_update(s, "telegram", 1002) is True
        assert repo.prune_processed_updates(s, older_than=timedelta(0), now=utcnow() + timedelta(seconds=1)) == 3


def test_claim_update_race_has_exactly_one_winner(db_engine):
    factory = make_session_factory(db_engine)
    barrier = threading.Barrier(6)
    wins: list[bool] = []

    def worker() -> None:
        barrier.wait()
        with factory.begin() as s:
            wins.append(repo.claim_update(s, "wecom", "MSG-77"))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    [t.start() for t in threads]
    [t.join(timeout=30) for t in threads]
    assert sorted(wins) == [False] * 5 + [True]


# --- audit ----------------------------------------------------------------------------------------

def test_audit_never_stores_raw_phone_or_id_numbers(session):
    repo.record(session, "dr_wang_sy", "referral.view", target="referral:12", details={
        "phone": "13912345678",
        "patient": {"id_number": "22070219800101123X", "note": "联系电话 13912345678"},
    })
    session.commit()
    stored = session.scalars(select(AuditLog)).one()
    text = repr(stored.details)
    assert "13912345678" not in text and "22070219800101123X" not in text
    assert stored.details["phone"] == "139****5678"
    assert stored.details["patient"]["id_number"] == "220***********123X"
    assert stored.at.tzinfo is not None


def test_set_roles_is_audited_only_when_roles_change(session, people):
    assert repo.set_roles(session, people["dr"], ["liaison", "physician"], actor="admin_sy") is True
    assert people["dr"].roles == ["physician", "liaison"]
    assert repo.set_roles(session, people["dr"], ["physician", "liaison"], actor="admin_sy") is False
    entries = repo.audit_entries(session, action="role_change")
    assert len(entries) == 1 and entries[0].details == {"from": ["physician"], "to": ["physician", "liaison"]}
    with pytest.raises(ValueError):
        repo.set_roles(session, people["dr"], ["superuser"], actor="admin_sy")
    assert session.scalar(select(func.count()).select_from(AuditLog)) == 1
