"""The routing document: one tenant's whole routing configuration as the api stores it.

The document is what `TenantConfig.from_dict` reads plus an optional `lcr` section with the
trunks and rate tables of least-cost routing:

    {"tenant_id": "...",                      # optional; the tenant it is stored for
     "default_scenario": "...", "scenarios": [...], "inbound": {...}, "numbering": {...},
     "directory": {...}, "allow_outside_numbers_from_menu": false, "failure_prompt": "...",
     "lcr": {
       "trunks":  [{"id": "rostelecom", "channel_limit": 60, "timezone": "Europe/Moscow",
                    "selection_prefix": "*55", "preference": 0}, ...],
       "tariffs": {"evening-cheap": {"price": "0.80", "bands": [{"days": ["mon", ...],
                    "start": "19:00", "end": "08:00", "price": "0.05"}]}},
       "rates":   {"rostelecom": {"7812": 0.35, "7495": "evening-cheap", ...}, ...}}}

A rate is "prefix (E.164 digits without '+')": either a flat price per minute (a JSON number
or a decimal string) or the name of a tariff with time-of-day bands. Rate tables reach
millions of prefixes, so they are plain JSON objects (one dict entry per prefix, nothing
nested) and equal prices share one `Tariff` object.

Two ways to load: strict (`validate_document`, the api's save path through
`Routing.ValidateConfig`) lists every problem; lenient (`load_document`, routing's cache)
refuses only what leaves nothing sensible to run and skips single bad rates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .lcr import LeastCostRouter, Tariff, Trunk
from .loading import LoadError, Problem, join, load
from .scenario import IcmStep
from .tenant import TenantConfig

# A rate table with thousands of bad rows should not produce a reply of thousands of lines.
MAX_RATE_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """A compiled tenant plus what the service needs to know about it without walking it."""

    tenant: TenantConfig
    rate_count: int  # prefixes in the LCR index (0 without LCR)
    icm_window_days: int | None  # the widest ICM window of any step; None = no ICM step
    skipped: tuple[Problem, ...]  # problems tolerated by lenient loading


def parse_json(document_json: str) -> object:
    """The document as Python data; `LoadError` when it is not JSON."""
    try:
        data: object = json.loads(document_json)
    except (ValueError, RecursionError) as exc:
        raise LoadError([Problem("", f"not valid JSON: {exc}")]) from None
    return data


def validate_document(data: object, tenant_id: str) -> list[Problem]:
    """Every problem of the document for `tenant_id`; empty when it may be saved."""
    problems: list[Problem] = []
    body = _body(data, tenant_id, problems)
    if body is None:
        return problems
    lcr_problems: list[Problem] = []
    lcr = _lcr(body.pop("lcr", None), lcr_problems)
    try:
        TenantConfig.from_dict(body, lcr=lcr, strict=True)
    except LoadError as exc:
        problems.extend(exc.problems)
    return problems + lcr_problems  # the (usually long) LCR last


def load_document(data: object, tenant_id: str) -> LoadedDocument:
    """Lenient loading for serving calls; `LoadError` only when nothing sensible can run."""
    problems: list[Problem] = []
    body = _body(data, tenant_id, problems)
    if body is None:
        raise LoadError(problems)
    rate_problems: list[Problem] = []
    lcr = _lcr(body.pop("lcr", None), rate_problems)
    structural = [p for p in rate_problems if not p.path.startswith("lcr.rates.")]
    if structural:
        # Without its trunks LCR cannot run, and running without LCR would skip permission
        # classes on outbound calls: refuse rather than route outside calls unchecked.
        raise LoadError(structural)
    tenant = TenantConfig.from_dict(body, lcr=lcr, strict=False)
    windows = [
        step.policy.window_days
        for scenario in tenant.scenarios
        for step in scenario.steps.values()
        if isinstance(step, IcmStep)
    ]
    return LoadedDocument(
        tenant,
        len(lcr.rates) if lcr is not None else 0,
        max(windows) if windows else None,
        tuple([*tenant.problems(), *rate_problems]),
    )


def _body(data: object, tenant_id: str, problems: list[Problem]) -> dict[str, object] | None:
    if not isinstance(data, Mapping):
        problems.append(Problem("", "expected an object"))
        return None
    body = dict(data)
    named = body.setdefault("tenant_id", tenant_id)
    if named != tenant_id:
        problems.append(
            Problem("tenant_id", f"is {named!r}, but the document is for tenant {tenant_id!r}")
        )
    return body


def _lcr(raw: object, problems: list[Problem]) -> LeastCostRouter | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.append(Problem("lcr", "expected an object"))
        return None
    before = len(problems)
    for key in raw:
        if key not in ("trunks", "tariffs", "rates"):
            problems.append(Problem(join("lcr", str(key)), "unknown field"))
    trunks: list[Trunk] = []
    raw_trunks = raw.get("trunks")
    if not isinstance(raw_trunks, list) or not raw_trunks:
        problems.append(Problem("lcr.trunks", "is required (a list of trunks)"))
    else:
        for index, item in enumerate(raw_trunks):
            trunk = load(Trunk, item, join("lcr.trunks", index), problems)
            if trunk is not None:
                trunks.append(trunk)
    ids = [t.id for t in trunks]
    for index, trunk_id in enumerate(ids):
        if ids.index(trunk_id) != index:
            problems.append(Problem(f"lcr.trunks.{index}.id", f"duplicate trunk {trunk_id!r}"))
    tariffs: dict[str, Tariff] = {}
    raw_tariffs = raw.get("tariffs", {})
    if not isinstance(raw_tariffs, Mapping):
        problems.append(Problem("lcr.tariffs", "expected an object of name -> tariff"))
    else:
        for name, item in raw_tariffs.items():
            tariff = load(Tariff, item, join("lcr.tariffs", str(name)), problems)
            if tariff is not None:
                tariffs[str(name)] = tariff
    raw_rates = raw.get("rates", {})
    if not isinstance(raw_rates, Mapping):
        problems.append(Problem("lcr.rates", "expected an object of trunk id -> rate table"))
        raw_rates = {}
    if len(problems) > before:
        return None
    rate_problems: list[Problem] = []
    tables: dict[str, Mapping[str, object]] = {}
    for trunk_id, table in raw_rates.items():
        # A table for a trunk that is gone is skipped, not fatal: the other trunks still route.
        if trunk_id not in ids:
            rate_problems.append(Problem(join("lcr.rates", str(trunk_id)), "unknown trunk"))
        elif not isinstance(table, Mapping):
            rate_problems.append(Problem(join("lcr.rates", trunk_id), "expected prefix -> rate"))
        else:
            tables[trunk_id] = table
    rows = _rate_rows(tables, tariffs, rate_problems)
    try:
        router = LeastCostRouter.build(trunks, rows)
    except ValueError as exc:
        problems.append(Problem("lcr.trunks", str(exc)))
        return None
    if len(rate_problems) > MAX_RATE_PROBLEMS:
        more = len(rate_problems) - MAX_RATE_PROBLEMS
        del rate_problems[MAX_RATE_PROBLEMS:]
        rate_problems.append(Problem("lcr.rates", f"... and {more} more bad rates"))
    problems.extend(rate_problems)
    return router


def _rate_rows(
    tables: Mapping[str, Mapping[str, object]],
    tariffs: Mapping[str, Tariff],
    problems: list[Problem],
) -> Iterator[tuple[str, str, Tariff]]:
    """(trunk, prefix, tariff) for every good rate; bad ones become problems and are skipped.

    A generator, so the index is filled straight from the parsed JSON with no list of a
    million tuples in between. Flat prices are memoised: decks repeat a few hundred prices
    over millions of prefixes, and one shared `Tariff` per price keeps the index small.
    """
    flat: dict[object, Tariff] = {}
    for trunk_id, table in tables.items():
        for prefix, rate in table.items():
            if isinstance(rate, str):
                tariff = tariffs.get(rate) or flat.get(rate)
            elif isinstance(rate, int | float) and not isinstance(rate, bool):
                tariff = flat.get(rate)
            else:
                tariff = None
            if tariff is None:
                tariff = _flat_tariff(rate, tariffs, flat)
                if tariff is None:
                    problems.append(
                        Problem(
                            f"lcr.rates.{trunk_id}.{prefix}",
                            f"{rate!r} is neither a price nor a tariff name",
                        )
                    )
                    continue
            if not prefix.isdigit():
                problems.append(
                    Problem(f"lcr.rates.{trunk_id}.{prefix}", "a prefix is digits only")
                )
                continue
            yield trunk_id, prefix, tariff


def _flat_tariff(
    rate: object, tariffs: Mapping[str, Tariff], flat: dict[object, Tariff]
) -> Tariff | None:
    if isinstance(rate, bool) or not isinstance(rate, int | float | str):
        return None
    if isinstance(rate, str) and rate in tariffs:
        return tariffs[rate]
    try:
        price = Decimal(str(rate))
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0:
        return None
    tariff = flat[rate] = Tariff(price)
    return tariff
