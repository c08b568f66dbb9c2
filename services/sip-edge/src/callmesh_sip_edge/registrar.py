"""The registrar's decisions, sans-I/O (RFC 3261 section 10.3).

:func:`plan_register` turns an authenticated REGISTER into a :class:`RegisterPlan` (which
bindings to add, refresh or remove) or a :class:`~.sip.validation.Rejection` (400, 423 with
Min-Expires); :func:`build_register_ok` writes the 200 that lists every binding the address of
record now has. The asyncio side (``edge.RegistrarService``) authenticates, applies the plan
to the location store in one transaction with its presence events, and sends the answer.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

from .sip.errors import SipParseError
from .sip.headers import ContactStar
from .sip.message import SipRequest, SipResponse, build_response
from .sip.uri import SipUri
from .sip.validation import Rejection


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """Registration lifetimes in seconds (README, "Registrar")."""

    default: int = 3600
    minimum: int = 60
    maximum: int = 7200
    # Contacts one user may hold; a user's own `max_contacts` overrides it when set.
    max_contacts: int = 10


@dataclass(frozen=True, slots=True)
class BindingChange:
    """Add or refresh (``expires`` > 0) or remove (``expires`` == 0) one contact."""

    contact_uri: str
    expires: int
    q: float | None = None
    instance_id: str = ""


@dataclass(frozen=True, slots=True)
class RegisterPlan:
    """What one REGISTER asks for: a query, ``Contact: *`` removal, or binding changes."""

    changes: tuple[BindingChange, ...] = ()
    remove_all: bool = False
    call_id: str = ""
    cseq: int = 0

    @property
    def query_only(self) -> bool:
        return not self.changes and not self.remove_all


def _parse_q(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        q = float(value)
    except ValueError:
        raise SipParseError("Bad Request - Invalid q value in Contact") from None
    if not 0.0 <= q <= 1.0:
        raise SipParseError("Bad Request - Invalid q value in Contact")
    return q


def plan_register(request: SipRequest, policy: ExpiryPolicy) -> RegisterPlan | Rejection:
    """Validate the Contact/Expires of a REGISTER (10.3 steps 6-7) and say what to change."""
    try:
        contacts = request.contacts if request.has("contact") else []
        header_expires = request.expires
    except SipParseError as error:
        return Rejection(error.status_code, error.reason)
    call_id, cseq = request.call_id, request.cseq.seq
    if isinstance(contacts, ContactStar):
        # RFC 3261 10.3 step 6: "*" only with Expires: 0.
        if header_expires != 0:
            return Rejection(400, "Bad Request - Contact * needs Expires: 0")
        return RegisterPlan(remove_all=True, call_id=call_id, cseq=cseq)
    changes: list[BindingChange] = []
    too_brief = False
    for contact in contacts:
        if not isinstance(contact.uri, SipUri):
            return Rejection(400, "Bad Request - Contact is not a SIP URI")
        raw = contact.params.get("expires")
        if raw is not None:
            if not (raw.isascii() and raw.isdigit()):
                return Rejection(400, "Bad Request - Invalid expires parameter in Contact")
            expires = min(int(raw[:12]), 2**32 - 1)
        elif header_expires is not None:
            expires = header_expires
        else:
            expires = policy.default
        if 0 < expires < policy.minimum:
            too_brief = True
        expires = min(expires, policy.maximum)
        try:
            q = _parse_q(contact.params.get("q"))
        except SipParseError as error:
            return Rejection(400, error.reason)
        instance = (contact.params.get("+sip.instance") or "").strip('"')
        changes.append(BindingChange(str(contact.uri), expires, q, instance))
    if too_brief:
        return Rejection(423, "Interval Too Brief", [("Min-Expires", str(policy.minimum))])
    uris = [change.contact_uri for change in changes]
    if len(set(uris)) != len(uris):
        return Rejection(400, "Bad Request - Contact listed twice")
    return RegisterPlan(changes=tuple(changes), call_id=call_id, cseq=cseq)


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact as the location store holds it."""

    contact_uri: str
    expires_at: float  # epoch seconds
    q: float | None = None


def build_register_ok(
    request: SipRequest, bindings: list[Binding], now: float, *, to_tag: str
) -> SipResponse:
    """The 200 listing every current binding with its remaining lifetime (10.3 step 8)."""
    headers: list[tuple[str, str]] = []
    for binding in bindings:
        remaining = max(0, int(binding.expires_at - now + 0.5))
        value = f"<{binding.contact_uri}>;expires={remaining}"
        if binding.q is not None:
            value += f";q={binding.q:g}"
        headers.append(("Contact", value))
    headers.append(("Date", _http_date(now)))
    return build_response(request, 200, to_tag=to_tag, headers=headers)


def _http_date(now: float) -> str:
    return email.utils.formatdate(now, usegmt=True)
