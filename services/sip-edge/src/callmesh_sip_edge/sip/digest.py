"""HTTP Digest authentication for SIP (RFC 3261 22, RFC 7616, RFC 8760).

Server side: :class:`DigestAuthenticator` issues challenges whose nonces it
can verify without storing them (an HMAC over a timestamp and random bytes
with a server secret), checks responses against a stored HA1 (never a
password), reports expired nonces as *stale*, and remembers the highest
nonce-count seen per nonce so that a captured Authorization header cannot be
replayed. Client side: :func:`build_authorization` answers a challenge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum, StrEnum

from .errors import DigestError
from .grammar import is_token, parse_quoted_string, quote_string


class DigestAlgorithm(StrEnum):
    MD5 = "MD5"
    SHA256 = "SHA-256"

    def hash_hex(self, text: str) -> str:
        data = text.encode("utf-8", "surrogateescape")
        if self is DigestAlgorithm.MD5:
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def from_header(cls, value: str | None) -> DigestAlgorithm:
        if value is None:
            return cls.MD5  # RFC 7616 3.3: absent means MD5
        for algorithm in cls:
            if algorithm.value.lower() == value.lower():
                return algorithm
        raise DigestError(f"unsupported digest algorithm {value!r}")


def compute_ha1(username: str, realm: str, password: str, algorithm: DigestAlgorithm) -> str:
    """What a user store keeps instead of the password."""
    return algorithm.hash_hex(f"{username}:{realm}:{password}")


def compute_response(
    *,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    algorithm: DigestAlgorithm,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    ha2 = algorithm.hash_hex(f"{method}:{uri}")
    if qop is None:
        return algorithm.hash_hex(f"{ha1}:{nonce}:{ha2}")
    return algorithm.hash_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---------------------------------------------------------------------------
# Header syntax


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Scheme name=value, name="quoted", ...`` -> (scheme, lower-cased params)."""
    text = value.strip(" \t")
    scheme, _, rest = text.partition(" ")
    if not scheme or not is_token(scheme):
        raise DigestError("missing authentication scheme")
    params: dict[str, str] = {}
    i = 0
    rest = rest.strip(" \t")
    end = len(rest)
    while i < end:
        while i < end and rest[i] in " \t,":
            i += 1
        if i >= end:
            break
        eq = rest.find("=", i)
        if eq == -1:
            raise DigestError("auth parameter without '='")
        name = rest[i:eq].strip(" \t")
        if not is_token(name):
            raise DigestError(f"invalid auth parameter name {name[:20]!r}")
        i = eq + 1
        while i < end and rest[i] in " \t":
            i += 1
        if i < end and rest[i] == '"':
            try:
                param_value, i = parse_quoted_string(rest, i)
            except ValueError:
                raise DigestError(f"unterminated quoted value for {name}") from None
        else:
            comma = rest.find(",", i)
            stop = end if comma == -1 else comma
            param_value = rest[i:stop].strip(" \t")
            if not param_value or not is_token(param_value):
                raise DigestError(f"invalid value for {name}")
            i = stop
        key = name.lower()
        if key in params:
            raise DigestError(f"duplicate auth parameter {name}")
        params[key] = param_value
        while i < end and rest[i] in " \t":
            i += 1
        if i < end and rest[i] != ",":
            raise DigestError("auth parameters must be separated by ','")
    return scheme, params


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A WWW-Authenticate / Proxy-Authenticate Digest challenge."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    def to_header_value(self) -> str:
        parts = [f"realm={quote_string(self.realm)}", f"nonce={quote_string(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={quote_string(self.opaque)}")
        parts.append(f"algorithm={self.algorithm.value}")
        if self.qop:
            parts.append(f"qop={quote_string(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> DigestChallenge:
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme[:20]}")
    if "realm" not in params or "nonce" not in params:
        raise DigestError("challenge without realm or nonce")
    qop = tuple(q.strip() for q in params["qop"].split(",") if q.strip()) if "qop" in params else ()
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=DigestAlgorithm.from_header(params.get("algorithm")),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """An Authorization / Proxy-Authorization Digest header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def to_header_value(self) -> str:
        parts = [
            f"username={quote_string(self.username)}",
            f"realm={quote_string(self.realm)}",
            f"nonce={quote_string(self.nonce)}",
            f"uri={quote_string(self.uri)}",
            f"response={quote_string(self.response)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.qop is not None:
            parts.extend(
                [f"qop={self.qop}", f"nc={self.nc}", f"cnonce={quote_string(self.cnonce or '')}"]
            )
        if self.opaque is not None:
            parts.append(f"opaque={quote_string(self.opaque)}")
        return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> DigestCredentials:
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise DigestError(f"not Digest credentials: {scheme[:20]}")
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise DigestError(f"credentials without {required}")
    qop = params.get("qop")
    nc = params.get("nc")
    cnonce = params.get("cnonce")
    if qop is not None:
        if qop.lower() != "auth":
            raise DigestError(f"unsupported qop {qop[:20]!r}")
        if nc is None or cnonce is None:
            raise DigestError("qop=auth without nc or cnonce")
        if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
            raise DigestError("nc must be 8 hex digits")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=DigestAlgorithm.from_header(params.get("algorithm")),
        qop=qop.lower() if qop else None,
        nc=nc,
        cnonce=cnonce,
        opaque=params.get("opaque"),
    )


# ---------------------------------------------------------------------------
# Server side


class AuthOutcome(Enum):
    OK = "ok"
    # Right credentials on an expired nonce: challenge again with stale=true.
    STALE = "stale"
    # Wrong password, unknown user, foreign nonce or realm: challenge again (and count a failure).
    INVALID = "invalid"
    # Nonce-count not above the last one seen: a replayed header. Challenge again.
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    reason: str

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


_NONCE_PAYLOAD = struct.Struct(">Q8s")  # milliseconds since the epoch, 8 random bytes
_MAC_SIZE = 16


class DigestAuthenticator:
    """Issue and verify Digest challenges for one realm.

    ``secret`` must be shared by every replica that may see the retry of a
    challenged request. Unknown users are verified against a dummy HA1 so
    that they cost the same time and yield the same outcome (INVALID) as a
    wrong password; the caller answers both identically.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_lifetime: float = 300.0,
        algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        require_qop: bool = False,
        max_tracked_nonces: int = 200_000,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("digest nonce secret must be at least 16 bytes")
        self.realm = realm
        self._secret = secret
        self._lifetime = nonce_lifetime
        self.algorithms = algorithms
        # Clients without qop (RFC 2069 style, e.g. pyVoIP) send no nonce-count, so
        # their nonces are single-use instead.
        self._require_qop = require_qop
        self._max_tracked = max_tracked_nonces
        self._opaque = hashlib.sha256(b"opaque:" + secret + realm.encode()).hexdigest()[:32]
        self._last_nc: dict[str, int] = {}
        self._expiry_queue: deque[tuple[float, str]] = deque()
        # Nonces issued before this instant are treated as stale (set on eviction).
        self._floor_ms = 0

    # -- nonces ----------------------------------------------------------

    def make_nonce(self, now: float) -> str:
        payload = _NONCE_PAYLOAD.pack(int(now * 1000), secrets.token_bytes(8))
        mac = hmac.new(self._secret, payload + self.realm.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(payload + mac[:_MAC_SIZE]).decode().rstrip("=")

    def _nonce_issued_ms(self, nonce: str) -> int | None:
        """Issue time of a nonce we made, or None if it is not ours."""
        if len(nonce) != 43:  # 32 bytes base64url without padding
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except ValueError:
            return None
        payload, mac = raw[: _NONCE_PAYLOAD.size], raw[_NONCE_PAYLOAD.size :]
        expected = hmac.new(self._secret, payload + self.realm.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected[:_MAC_SIZE]):
            return None
        issued_ms, _ = _NONCE_PAYLOAD.unpack(payload)
        return int(issued_ms)

    # -- challenges ------------------------------------------------------

    def challenges(self, now: float, *, stale: bool = False) -> list[DigestChallenge]:
        """One challenge per algorithm, strongest first (RFC 8760 section 2.4)."""
        nonce = self.make_nonce(now)
        return [
            DigestChallenge(
                realm=self.realm,
                nonce=nonce,
                algorithm=algorithm,
                qop=("auth",),
                opaque=self._opaque,
                stale=stale,
            )
            for algorithm in self.algorithms
        ]

    def challenge_headers(self, now: float, *, stale: bool = False) -> list[str]:
        return [c.to_header_value() for c in self.challenges(now, stale=stale)]

    # -- verification ----------------------------------------------------

    def verify(
        self,
        credentials: DigestCredentials,
        *,
        method: str,
        ha1: str | None,
        now: float,
    ) -> AuthResult:
        """Check ``credentials`` sent with a ``method`` request.

        ``ha1`` is the stored HA1 for ``credentials.username`` and
        ``credentials.algorithm`` in this realm, or ``None`` for an unknown user.
        """
        self._forget_expired(now)
        algorithm = credentials.algorithm
        known_user = ha1 is not None
        if ha1 is None:
            ha1 = algorithm.hash_hex(f"unknown:{self.realm}:{self._opaque}")
        expected = compute_response(
            ha1=ha1,
            nonce=credentials.nonce,
            method=method,
            uri=credentials.uri,
            algorithm=algorithm,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
        )
        # Bytes: compare_digest refuses non-ASCII str, and the header is client-controlled.
        response_ok = hmac.compare_digest(
            expected.encode(), credentials.response.encode("utf-8", "surrogateescape")
        )
        if credentials.realm != self.realm:
            return AuthResult(AuthOutcome.INVALID, "wrong realm")
        if algorithm not in self.algorithms:
            return AuthResult(AuthOutcome.INVALID, "algorithm not offered")
        issued_ms = self._nonce_issued_ms(credentials.nonce)
        if issued_ms is None:
            return AuthResult(AuthOutcome.INVALID, "nonce not issued by us")
        if not known_user or not response_ok:
            return AuthResult(AuthOutcome.INVALID, "wrong credentials")
        if credentials.qop is None and self._require_qop:
            return AuthResult(AuthOutcome.INVALID, "qop=auth required")
        age = now - issued_ms / 1000.0
        if age > self._lifetime or age < -5.0 or issued_ms < self._floor_ms:
            return AuthResult(AuthOutcome.STALE, "nonce expired")
        # nc 0 stands for "no nonce-count" (RFC 2069 clients): the nonce is single use.
        count = int(credentials.nc, 16) if credentials.nc is not None else 0
        last = self._last_nc.get(credentials.nonce)
        if last is not None and (count == 0 or count <= last):
            return AuthResult(AuthOutcome.REPLAY, "nonce-count already used")
        if count == 0 and credentials.qop is not None:
            return AuthResult(AuthOutcome.INVALID, "nonce-count must start at 1")
        if last is None:
            self._expiry_queue.append((issued_ms / 1000.0 + self._lifetime, credentials.nonce))
            if len(self._last_nc) >= self._max_tracked:
                self._evict_oldest()
        self._last_nc[credentials.nonce] = count
        return AuthResult(AuthOutcome.OK, "ok")

    def _forget_expired(self, now: float) -> None:
        queue = self._expiry_queue
        while queue and queue[0][0] < now:
            _, nonce = queue.popleft()
            self._last_nc.pop(nonce, None)

    def _evict_oldest(self) -> None:
        expiry, nonce = self._expiry_queue.popleft()
        self._last_nc.pop(nonce, None)
        # Anything as old as the evicted nonce can no longer be replay-checked: call it stale.
        self._floor_ms = max(self._floor_ms, int((expiry - self._lifetime) * 1000) + 1)

    @property
    def tracked_nonces(self) -> int:
        return len(self._last_nc)


# ---------------------------------------------------------------------------
# Client side


def select_challenge(values: list[str]) -> DigestChallenge:
    """The strongest Digest challenge we can answer among header values."""
    best: DigestChallenge | None = None
    for value in values:
        try:
            challenge = parse_challenge(value)
        except DigestError:
            continue
        if best is None or (
            challenge.algorithm is DigestAlgorithm.SHA256
            and best.algorithm is not DigestAlgorithm.SHA256
        ):
            best = challenge
    if best is None:
        raise DigestError("no usable Digest challenge")
    return best


def build_authorization(
    challenge: DigestChallenge,
    *,
    username: str,
    method: str,
    uri: str,
    password: str | None = None,
    ha1: str | None = None,
    cnonce: str | None = None,
    nc: int = 1,
) -> DigestCredentials:
    """Credentials answering ``challenge`` (qop=auth when the server offers it)."""
    if ha1 is None:
        if password is None:
            raise ValueError("build_authorization needs a password or an HA1")
        ha1 = compute_ha1(username, challenge.realm, password, challenge.algorithm)
    use_qop = "auth" in challenge.qop
    nc_text = f"{nc:08x}" if use_qop else None
    if use_qop and cnonce is None:
        cnonce = secrets.token_hex(8)
    response = compute_response(
        ha1=ha1,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        algorithm=challenge.algorithm,
        qop="auth" if use_qop else None,
        nc=nc_text,
        cnonce=cnonce if use_qop else None,
    )
    return DigestCredentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop="auth" if use_qop else None,
        nc=nc_text,
        cnonce=cnonce if use_qop else None,
        opaque=challenge.opaque,
    )
