"""Abuse protection, sans-I/O: every decision takes ``now`` and reads no clock.

Three independent defences, each with documented defaults (README, "Abuse protection"):

- :class:`SourceRateLimiter`: a token bucket per (source address, method) for REGISTER and INVITE,
  so one address cannot flood the registrar or the call path.
- :class:`AuthFailureTracker` per source: after ``source_failures`` failed authentications within
  ``window`` seconds the address is banned for ``ban_seconds`` (every request from it is
  refused without any work).
- the same tracker per account (tenant, username): after ``account_failures`` failures within
  ``window`` from *any* addresses the account is locked for ``lockout_seconds``, so a botnet
  spreading its guesses over many addresses still cannot brute-force one password. While an
  account is locked even the right password is refused; the lock only delays its owner.

Memory is bounded: each table forgets entries that have gone idle and holds at most
``max_entries`` (the oldest entries are dropped first). A success does not reset the failure
counts: otherwise an attacker could interleave guesses with the owner's own refreshes forever.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    per_second: float
    burst: float


@dataclass(frozen=True, slots=True)
class AbuseSettings:
    register_rate: RateLimit = RateLimit(per_second=5.0, burst=20.0)
    invite_rate: RateLimit = RateLimit(per_second=5.0, burst=20.0)
    # Failed authentications counted within this sliding window.
    window: float = 300.0
    source_failures: int = 20
    ban_seconds: float = 600.0
    account_failures: int = 10
    lockout_seconds: float = 900.0
    max_entries: int = 100_000


class TokenBucket:
    __slots__ = ("_limit", "_stamp", "_tokens")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self._limit = limit
        self._tokens = limit.burst
        self._stamp = now

    def take(self, now: float) -> bool:
        limit = self._limit
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(limit.burst, self._tokens + elapsed * limit.per_second)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def full_at(self, now: float) -> float:
        """When the bucket will be full again (it can be forgotten after that)."""
        missing = self._limit.burst - self._tokens
        return self._stamp + missing / self._limit.per_second


class SourceRateLimiter:
    """Token buckets per (source address, method)."""

    def __init__(self, limits: dict[str, RateLimit], *, max_entries: int = 100_000) -> None:
        self._limits = limits
        self._max_entries = max_entries
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def allow(self, source: str, method: str, now: float) -> bool:
        limit = self._limits.get(method)
        if limit is None:
            return True
        key = (source, method)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._prune(now)
            bucket = TokenBucket(limit, now)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        # Least recently used first; a full bucket is the same as no bucket.
        while buckets:
            key, bucket = next(iter(buckets.items()))
            if len(buckets) < self._max_entries and bucket.full_at(now) > now:
                break
            del buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class _FailureWindow:
    __slots__ = ("blocked_until", "failures")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.blocked_until = 0.0


class FailureCounter:
    """Counts failures per key in a sliding window and blocks a key that has too many."""

    def __init__(
        self, *, threshold: int, window: float, block_seconds: float, max_entries: int
    ) -> None:
        self._threshold = threshold
        self._window = window
        self._block = block_seconds
        self._max_entries = max_entries
        self._entries: OrderedDict[object, _FailureWindow] = OrderedDict()

    def blocked(self, key: object, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.blocked_until > now

    def blocked_until(self, key: object) -> float:
        entry = self._entries.get(key)
        return 0.0 if entry is None else entry.blocked_until

    def record_failure(self, key: object, now: float) -> bool:
        """Count one failure; True when this failure (newly) blocks ``key``."""
        entry = self._entries.get(key)
        if entry is None:
            self._prune(now)
            entry = _FailureWindow()
            self._entries[key] = entry
        else:
            self._entries.move_to_end(key)
        failures = entry.failures
        failures.append(now)
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if len(failures) >= self._threshold and entry.blocked_until <= now:
            entry.blocked_until = now + self._block
            failures.clear()
            return True
        return False

    def _prune(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            idle = entry.blocked_until <= now and (
                not entry.failures or entry.failures[-1] <= now - self._window
            )
            if len(entries) < self._max_entries and not idle:
                break
            del entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class AbuseGuard:
    """The edge's three defences together, keyed by source address and account."""

    def __init__(self, settings: AbuseSettings | None = None) -> None:
        self.settings = settings = settings or AbuseSettings()
        self.rates = SourceRateLimiter(
            {"REGISTER": settings.register_rate, "INVITE": settings.invite_rate},
            max_entries=settings.max_entries,
        )
        self.sources = FailureCounter(
            threshold=settings.source_failures,
            window=settings.window,
            block_seconds=settings.ban_seconds,
            max_entries=settings.max_entries,
        )
        self.accounts = FailureCounter(
            threshold=settings.account_failures,
            window=settings.window,
            block_seconds=settings.lockout_seconds,
            max_entries=settings.max_entries,
        )

    def source_banned(self, source: str, now: float) -> bool:
        return self.sources.blocked(source, now)

    def allow_request(self, source: str, method: str, now: float) -> bool:
        """False when the source is banned or over its rate for ``method``."""
        if self.sources.blocked(source, now):
            return False
        return self.rates.allow(source, method, now)

    def account_locked(self, account: tuple[str, str], now: float) -> bool:
        return self.accounts.blocked(account, now)

    def auth_failed(self, source: str, account: tuple[str, str] | None, now: float) -> None:
        """A wrong password, unknown user or foreign nonce from ``source`` for ``account``."""
        self.sources.record_failure(source, now)
        if account is not None:
            self.accounts.record_failure(account, now)
