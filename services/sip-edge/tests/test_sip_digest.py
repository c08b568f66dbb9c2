"""Digest authentication: RFC 7616 vectors, challenges, stale nonces, replay protection."""

from __future__ import annotations

import pytest
from callmesh_sip_edge.sip.digest import (
    AuthOutcome,
    DigestAlgorithm,
    DigestAuthenticator,
    DigestChallenge,
    DigestCredentials,
    build_authorization,
    compute_ha1,
    compute_response,
    parse_auth_params,
    parse_challenge,
    parse_credentials,
    select_challenge,
)
from callmesh_sip_edge.sip.errors import DigestError

REALM = "tenant1.callmesh.test"
SECRET = b"0123456789abcdef-test-secret"
T0 = 1_800_000_000.0


# RFC 7616 section 3.9.1. The SHA-256 value is the one printed in the RFC. The
# printed MD5 value (…eebdec3) is a known erratum (errata 4897); this is the value
# the RFC's own inputs produce, the one other implementations check against.
@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (DigestAlgorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (
            DigestAlgorithm.SHA256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ],
)
def test_rfc7616_example(algorithm: DigestAlgorithm, expected: str) -> None:
    ha1 = compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    response = compute_response(
        ha1=ha1,
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        method="GET",
        uri="/dir/index.html",
        algorithm=algorithm,
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == expected


def test_rfc2617_style_without_qop() -> None:
    # RFC 2617 3.5 example values, no qop: H(HA1:nonce:HA2).
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", DigestAlgorithm.MD5)
    assert ha1 == "939e7578ed9e3c518a452acee763bce9"
    response = compute_response(
        ha1=ha1,
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        algorithm=DigestAlgorithm.MD5,
    )
    ha2 = DigestAlgorithm.MD5.hash_hex("GET:/dir/index.html")
    assert response == DigestAlgorithm.MD5.hash_hex(
        f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}"
    )


def test_header_parsing() -> None:
    scheme, params = parse_auth_params(
        'Digest username="bob", realm="a, b", nonce="n\\"1", uri="sip:a@b",'
        ' response="abc", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c"'
    )
    assert scheme == "Digest"
    assert params["realm"] == "a, b" and params["nonce"] == 'n"1' and params["qop"] == "auth"
    credentials = parse_credentials(
        'Digest username="bob", realm="r", nonce="n", uri="sip:r", response="ABC",'
        ' algorithm=SHA-256, qop=auth, nc=0000000a, cnonce="c", opaque="o"'
    )
    assert credentials.algorithm is DigestAlgorithm.SHA256 and credentials.response == "abc"
    assert parse_credentials(credentials.to_header_value()) == credentials
    challenge = DigestChallenge("r", "n", DigestAlgorithm.SHA256, ("auth",), "o", stale=True)
    assert parse_challenge(challenge.to_header_value()) == challenge


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "missing authentication scheme"),
        ('Basic realm="x"', "not Digest"),
        ('Digest realm="x"', "without username"),
        ('Digest username="a" realm="r"', "separated by ','"),
        ('Digest username="a, realm=r', "unterminated"),
        ("Digest username=", "invalid value"),
        ('Digest username="a", username="b"', "duplicate"),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
            "without nc or cnonce",
        ),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=SHA-1',
            "unsupported digest algorithm",
        ),
    ],
)
def test_malformed_headers(value: str, reason: str) -> None:
    with pytest.raises(DigestError, match=reason):
        parse_credentials(value)


def _login(
    server: DigestAuthenticator,
    now: float,
    *,
    password: str = "s3cret",
    algorithm: DigestAlgorithm = DigestAlgorithm.SHA256,
) -> tuple[DigestCredentials, DigestChallenge]:
    challenge = next(c for c in server.challenges(now) if c.algorithm is algorithm)
    credentials = build_authorization(
        challenge,
        username="101",
        password=password,
        method="REGISTER",
        uri="sip:tenant1.callmesh.test",
    )
    # Through the wire format, as the registrar sees it.
    return parse_credentials(credentials.to_header_value()), challenge


def _stored_ha1(algorithm: DigestAlgorithm) -> str:
    return compute_ha1("101", REALM, "s3cret", algorithm)


@pytest.mark.parametrize("algorithm", list(DigestAlgorithm))
def test_challenge_and_verify(algorithm: DigestAlgorithm) -> None:
    server = DigestAuthenticator(REALM, SECRET)
    headers = server.challenge_headers(T0)
    assert headers[0].startswith("Digest realm=") and "algorithm=SHA-256" in headers[0]
    assert "algorithm=MD5" in headers[1] and 'qop="auth"' in headers[1]
    credentials, _ = _login(server, T0, algorithm=algorithm)
    result = server.verify(credentials, method="REGISTER", ha1=_stored_ha1(algorithm), now=T0 + 1)
    assert result.ok, result.reason


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    server = DigestAuthenticator(REALM, SECRET)
    wrong, _ = _login(server, T0, password="guess")
    bad = server.verify(wrong, method="REGISTER", ha1=_stored_ha1(DigestAlgorithm.SHA256), now=T0)
    credentials, _ = _login(server, T0)
    unknown = server.verify(credentials, method="REGISTER", ha1=None, now=T0)
    assert bad.outcome is unknown.outcome is AuthOutcome.INVALID
    assert bad.reason == unknown.reason


def test_replayed_header_is_rejected_even_with_another_contact() -> None:
    server = DigestAuthenticator(REALM, SECRET)
    credentials, _ = _login(server, T0)
    ha1 = _stored_ha1(DigestAlgorithm.SHA256)
    assert server.verify(credentials, method="REGISTER", ha1=ha1, now=T0 + 1).ok
    # An attacker re-sends the captured Authorization header in a REGISTER with their
    # own Contact: digest does not cover Contact, so the nonce-count is what stops it.
    replay = server.verify(credentials, method="REGISTER", ha1=ha1, now=T0 + 2)
    assert replay.outcome is AuthOutcome.REPLAY
    # The genuine client moves on with nc=2 on the same nonce: accepted.
    challenge = parse_challenge(server.challenge_headers(T0)[0])
    nonce_reuse = build_authorization(
        DigestChallenge(
            REALM, credentials.nonce, DigestAlgorithm.SHA256, ("auth",), challenge.opaque
        ),
        username="101",
        password="s3cret",
        method="REGISTER",
        uri="sip:tenant1.callmesh.test",
        nc=2,
    )
    assert server.verify(nonce_reuse, method="REGISTER", ha1=ha1, now=T0 + 3).ok
    assert server.verify(nonce_reuse, method="REGISTER", ha1=ha1, now=T0 + 4).outcome is (
        AuthOutcome.REPLAY
    )


def test_nonce_without_qop_is_single_use() -> None:
    server = DigestAuthenticator(REALM, SECRET)
    challenge = DigestChallenge(REALM, server.make_nonce(T0), DigestAlgorithm.MD5)  # no qop
    credentials = build_authorization(
        challenge, username="101", password="s3cret", method="REGISTER", uri="sip:x"
    )
    assert credentials.qop is None and credentials.nc is None
    ha1 = _stored_ha1(DigestAlgorithm.MD5)
    assert server.verify(credentials, method="REGISTER", ha1=ha1, now=T0).ok
    assert server.verify(credentials, method="REGISTER", ha1=ha1, now=T0).outcome is (
        AuthOutcome.REPLAY
    )
    strict = DigestAuthenticator(REALM, SECRET, require_qop=True)
    assert strict.verify(credentials, method="REGISTER", ha1=ha1, now=T0).outcome is (
        AuthOutcome.INVALID
    )


def test_expired_nonce_is_stale_only_for_right_credentials() -> None:
    server = DigestAuthenticator(REALM, SECRET, nonce_lifetime=60)
    ha1 = _stored_ha1(DigestAlgorithm.SHA256)
    credentials, _ = _login(server, T0)
    assert server.verify(credentials, method="REGISTER", ha1=ha1, now=T0 + 61).outcome is (
        AuthOutcome.STALE
    )
    wrong, _ = _login(server, T0, password="nope")
    assert server.verify(wrong, method="REGISTER", ha1=ha1, now=T0 + 61).outcome is (
        AuthOutcome.INVALID
    )
    assert "stale=true" in server.challenge_headers(T0 + 61, stale=True)[0]


def test_nonces_from_another_secret_or_realm_or_method_fail() -> None:
    server = DigestAuthenticator(REALM, SECRET)
    other = DigestAuthenticator(REALM, b"another-secret-0123456789")
    ha1 = _stored_ha1(DigestAlgorithm.SHA256)
    foreign, _ = _login(other, T0)
    result = server.verify(foreign, method="REGISTER", ha1=ha1, now=T0)
    assert result.outcome is AuthOutcome.INVALID and "nonce" in result.reason
    credentials, _ = _login(server, T0)
    assert server.verify(credentials, method="INVITE", ha1=ha1, now=T0).outcome is (
        AuthOutcome.INVALID
    )
    md5_only = DigestAuthenticator(REALM, SECRET, algorithms=(DigestAlgorithm.MD5,))
    assert md5_only.verify(credentials, method="REGISTER", ha1=ha1, now=T0).outcome is (
        AuthOutcome.INVALID
    )


def test_secret_shared_between_replicas_verifies_anywhere() -> None:
    first = DigestAuthenticator(REALM, SECRET)
    second = DigestAuthenticator(REALM, SECRET)
    credentials, _ = _login(first, T0)
    assert second.verify(
        credentials, method="REGISTER", ha1=_stored_ha1(DigestAlgorithm.SHA256), now=T0
    ).ok


def test_tracked_nonces_expire_and_are_bounded() -> None:
    server = DigestAuthenticator(REALM, SECRET, nonce_lifetime=10, max_tracked_nonces=3)
    ha1 = _stored_ha1(DigestAlgorithm.SHA256)
    logins = [_login(server, T0 + i)[0] for i in range(4)]
    for i, credentials in enumerate(logins):
        assert server.verify(credentials, method="REGISTER", ha1=ha1, now=T0 + i).ok
    assert server.tracked_nonces == 3
    # The evicted (oldest) nonce can no longer be replay-checked, so it is stale.
    assert server.verify(logins[0], method="REGISTER", ha1=ha1, now=T0 + 4).outcome is (
        AuthOutcome.STALE
    )
    server.verify(logins[3], method="REGISTER", ha1=ha1, now=T0 + 100)
    assert server.tracked_nonces == 0


def test_client_selects_strongest_challenge_and_rejects_short_secret() -> None:
    server = DigestAuthenticator(
        REALM, SECRET, algorithms=(DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
    )
    chosen = select_challenge(['Basic realm="x"', *server.challenge_headers(T0)])
    assert chosen.algorithm is DigestAlgorithm.SHA256
    with pytest.raises(DigestError):
        select_challenge(['Basic realm="x"'])
    with pytest.raises(ValueError, match="16 bytes"):
        DigestAuthenticator(REALM, b"short")


def test_non_ascii_response_is_invalid_not_a_crash() -> None:
    # Found by the fuzz target: hmac.compare_digest refuses non-ASCII str.
    server = DigestAuthenticator(REALM, SECRET)
    nonce = server.make_nonce(T0)
    credentials = parse_credentials(
        f'Digest username="101", realm="{REALM}", nonce="{nonce}", uri="sip:x", response="é"'
    )
    result = server.verify(credentials, method="REGISTER", ha1="0" * 32, now=T0)
    assert result.outcome is AuthOutcome.INVALID
