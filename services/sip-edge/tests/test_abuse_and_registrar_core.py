"""Sans-I/O parts of the registrar and the abuse protection, with ``now`` passed in."""

from __future__ import annotations

from callmesh_sip_edge.abuse import AbuseGuard, AbuseSettings, FailureCounter, RateLimit
from callmesh_sip_edge.registrar import (
    Binding,
    ExpiryPolicy,
    RegisterPlan,
    build_register_ok,
    plan_register,
)
from callmesh_sip_edge.sip.message import SipRequest
from callmesh_sip_edge.sip.parser import parse_message
from callmesh_sip_edge.sip.validation import Rejection


def register(*headers: str) -> SipRequest:
    text = (
        "REGISTER sip:acme.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
        "From: <sip:101@acme.test>;tag=a\r\nTo: <sip:101@acme.test>\r\n"
        "Call-ID: c1\r\nCSeq: 7 REGISTER\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


POLICY = ExpiryPolicy(default=3600, minimum=60, maximum=7200)


def test_expiry_from_param_header_default_and_clamped() -> None:
    plan = plan_register(
        register(
            "Contact: <sip:a@192.0.2.1>;expires=120, <sip:b@192.0.2.1>",
            "Contact: <sip:c@192.0.2.1>;expires=99999;q=0.5",
            "Expires: 300",
        ),
        POLICY,
    )
    assert isinstance(plan, RegisterPlan)
    assert [(c.contact_uri, c.expires, c.q) for c in plan.changes] == [
        ("sip:a@192.0.2.1", 120, None),
        ("sip:b@192.0.2.1", 300, None),
        ("sip:c@192.0.2.1", 7200, 0.5),
    ]
    assert (plan.call_id, plan.cseq) == ("c1", 7)
    default = plan_register(register("Contact: <sip:a@192.0.2.1>"), POLICY)
    assert isinstance(default, RegisterPlan) and default.changes[0].expires == 3600


def test_too_brief_gets_423_with_min_expires_but_zero_removes() -> None:
    brief = plan_register(register("Contact: <sip:a@192.0.2.1>", "Expires: 30"), POLICY)
    assert isinstance(brief, Rejection)
    assert brief.status_code == 423 and brief.headers == [("Min-Expires", "60")]
    remove = plan_register(register("Contact: <sip:a@192.0.2.1>;expires=0"), POLICY)
    assert isinstance(remove, RegisterPlan) and remove.changes[0].expires == 0


def test_star_needs_expires_zero_and_query_has_no_contact() -> None:
    star = plan_register(register("Contact: *", "Expires: 0"), POLICY)
    assert isinstance(star, RegisterPlan) and star.remove_all
    bad = plan_register(register("Contact: *", "Expires: 10"), POLICY)
    assert isinstance(bad, Rejection) and bad.status_code == 400
    query = plan_register(register(), POLICY)
    assert isinstance(query, RegisterPlan) and query.query_only


def test_bad_contacts_are_400_naming_the_problem() -> None:
    for header, words in [
        ("Contact: <sip:a@192.0.2.1>;q=2", "q value"),
        ("Contact: <sip:a@192.0.2.1>;expires=soon", "expires"),
        ("Contact: <sip:a@192.0.2.1>, <sip:a@192.0.2.1>", "twice"),
        ("Contact: <tel:+123>", "SIP URI"),
    ]:
        rejection = plan_register(register(header), POLICY)
        assert isinstance(rejection, Rejection), header
        assert rejection.status_code == 400 and words in rejection.reason, header


def test_ok_lists_each_binding_with_remaining_lifetime() -> None:
    request = register("Contact: <sip:a@192.0.2.1>")
    ok = build_register_ok(
        request,
        [Binding("sip:a@192.0.2.1", 1_000_120.0), Binding("sip:b@192.0.2.1", 1_000_030.4, 0.5)],
        1_000_000.0,
        to_tag="t1",
    )
    assert ok.status_code == 200 and ok.to.tag == "t1"
    assert ok.get_all("contact") == [
        "<sip:a@192.0.2.1>;expires=120",
        "<sip:b@192.0.2.1>;expires=30;q=0.5",
    ]


def test_token_bucket_allows_burst_then_refills() -> None:
    guard = AbuseGuard(AbuseSettings(register_rate=RateLimit(per_second=2.0, burst=3.0)))
    now = 100.0
    assert [guard.allow_request("198.51.100.1", "REGISTER", now) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    # Another address and another method have their own buckets.
    assert guard.allow_request("198.51.100.2", "REGISTER", now)
    assert guard.allow_request("198.51.100.1", "OPTIONS", now)
    assert not guard.allow_request("198.51.100.1", "REGISTER", now + 0.4)
    assert guard.allow_request("198.51.100.1", "REGISTER", now + 0.5)


def test_source_ban_after_repeated_failures_then_expires() -> None:
    guard = AbuseGuard(AbuseSettings(source_failures=3, ban_seconds=60.0, window=30.0))
    source = "203.0.113.9"
    for second in range(2):
        guard.auth_failed(source, ("t", "101"), 10.0 + second)
    assert not guard.source_banned(source, 12.0)
    guard.auth_failed(source, ("t", "102"), 12.0)
    assert guard.source_banned(source, 12.0)
    assert not guard.allow_request(source, "REGISTER", 13.0)
    assert not guard.source_banned(source, 72.1)


def test_failures_outside_the_window_do_not_count() -> None:
    counter = FailureCounter(threshold=3, window=10.0, block_seconds=5.0, max_entries=10)
    assert not counter.record_failure("k", 0.0)
    assert not counter.record_failure("k", 6.0)
    assert not counter.record_failure("k", 12.0)  # the failure at 0.0 has left the window
    assert counter.record_failure("k", 13.0)
    assert counter.blocked("k", 17.9) and not counter.blocked("k", 18.1)


def test_account_lockout_from_many_sources_bans_no_single_source() -> None:
    settings = AbuseSettings(account_failures=5, source_failures=3, lockout_seconds=900.0)
    guard = AbuseGuard(settings)
    account = ("tenant-a", "101")
    for bot in range(5):
        guard.auth_failed(f"10.0.{bot}.1", account, 50.0 + bot)
    assert guard.account_locked(account, 55.0)
    assert not any(guard.source_banned(f"10.0.{bot}.1", 55.0) for bot in range(5))
    # The same extension in another tenant is another account.
    assert not guard.account_locked(("tenant-b", "101"), 55.0)
    assert not guard.account_locked(account, 54.0 + 900.0 + 0.1)


def test_tables_stay_bounded() -> None:
    counter = FailureCounter(threshold=100, window=10.0, block_seconds=5.0, max_entries=50)
    for index in range(1000):
        counter.record_failure(f"k{index}", float(index))
    assert len(counter) <= 50
    guard = AbuseGuard(AbuseSettings(max_entries=20))
    for index in range(500):
        guard.allow_request(f"192.0.2.{index}", "INVITE", 1.0)
    assert len(guard.rates) <= 20
