"""The scheduler's database guarantees on SQLite and PostgreSQL (issue 10): one lease holder at a
time, each ledger key handled once even when two schedulers race, training records stored once,
and meetings with their invitations and answers round-trip."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone

from storage import meetings as store
from storage import quotas as quota_store
from storage.db import make_session_factory
from storage.models import Consortium, Institution, Staff

pytest_plugins = ("storage.testing",)

NOW = datetime(2027, 1, 1, 1, tzinfo=timezone.utc)


def _directory(factory) -> tuple[int, int, int]:
    with factory.begin() as s:
        c = Consortium(code="zhangdian", name="张店区人民医院医疗集团")
        lead = Institution(consortium=c, name="张店区人民医院", level="二级", is_lead=True, departments=[])
        clinic = Institution(consortium=c, name="湖田卫生院", level="基层", departments=[])
        s.add_all([c, lead, clinic])
        s.flush()
        xu = Staff(code="liaison_xu_zd", name="徐静怡", roles=["liaison"], institution_id=clinic.id)
        s.add(xu)
        s.flush()
        return lead.id, clinic.id, xu.id


def test_one_lease_holder_and_each_key_once_under_a_race(db_engine):
    factory = make_session_factory(db_engine)
    holders: list[str] = []

    def contend(name: str) -> None:
        with factory.begin() as s:
            if store.acquire_lease(s, "scheduler", name, NOW, timedelta(seconds=60)):
                holders.append(name)

    threads = [threading.Thread(target=contend, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(holders) == 1
    with factory.begin() as s:
        assert not store.acquire_lease(s, "scheduler", "late", NOW + timedelta(seconds=59), timedelta(seconds=60))
        assert store.acquire_lease(s, "scheduler", "late", NOW + timedelta(seconds=61), timedelta(seconds=60))

    won: list[bool] = []

    def log() -> None:
        with factory.begin() as s:
            won.append(store.log_once(s, "meeting:1:20270110T010000Z:1d", "meeting_reminder", NOW, "sent", now=NOW))

    threads = [threading.Thread(target=log) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False, False, False, True]
    with factory() as s:
        assert store.handled_keys(s, "meeting:", NOW - timedelta(days=1)) == {"meeting:1:20270110T010000Z:1d"}


def test_records_are_stored_once_and_meetings_round_trip(db_engine):
    factory = make_session_factory(db_engine)
    lead, clinic, xu = _directory(factory)
    row = {"kind": "进修", "person": "赵医生", "from_institution_id": clinic, "to_institution_id": lead,
           "start": date(2026, 1, 5), "end": date(2026, 2, 20)}
    with factory.begin() as s:
        assert quota_store.add_records(s, [row, row], source="import", created_by="test") == 1
    with factory.begin() as s:
        assert quota_store.add_records(s, [row], source="import", created_by="test") == 0
        assert [r.person for r in quota_store.records_from(s, [clinic])] == ["赵医生"]
    with factory.begin() as s:
        consortium = s.get(Institution, lead).consortium
        m = store.create_meeting(s, consortium=consortium, kind="理事会", title="理事会", starts_at=NOW + timedelta(days=9),
                                 institution_ids=[lead, clinic, clinic], created_by="test", repeat="quarterly", now=NOW)
        store.set_response(s, m.id, m.starts_at, xu, "attend", "web", now=NOW)
        store.set_response(s, m.id, m.starts_at, xu, "leave", "wecom", now=NOW)  # changed their mind
        meeting_id = m.id
    with factory() as s:
        m = store.find_meeting(s, "理事会")
        assert m.id == meeting_id and len(m.invitations) == 2
        assert store.responses(s, meeting_id, m.starts_at) == {xu: "leave"}
        assert store.liaisons_of(s, [lead, clinic]) == {lead: [], clinic: [s.get(Staff, xu)]}
