"""Routing's pure decision core: no I/O, no clock reads, no protobuf.

Everything here takes data and `now` in and returns data out, so the gRPC servicer and the
Kafka consumer stay thin adapters that map these dataclasses to and from the contracts.

Modules, from the bottom up:
  numbers         E.164 normalisation (phonenumbers) and call classes for permissions
  masks           prefixes, digit patterns (X N Z [1-5] .), regexes; most-specific match
  timeconditions  weekly rules, holidays (`holidays` package), overrides, in the tenant zone
  lists           black/white lists: block, route, priority
  ringgroups      the four ring strategies -> a ring plan (who rings from when to when)
  followme        a user's devices and numbers in order -> a ring plan
  icm             "who last talked to this caller": ordered sources, window, exceptions
  lcr             longest-prefix rate index, time-of-day tariffs, channel limits, carrier
                  selection, permission classes
  directory       users, groups, schedules, lists, short numbers as routing sees them
  scenario        the scenario graph as typed steps, loading and `validate`
  tenant          one tenant's compiled configuration (`TenantConfig.from_dict`)
  verbs           the verbs and verb results exchanged with sip-edge
  engine          `plan` and `resume`: stateless interpretation into verbs plus reasons
  loading         dict/JSON -> dataclasses, collecting every problem with its path

How the adapters plug in:
  * configuration: build `TenantConfig.from_dict(data, lcr=..., strict=False)` from what
    `Provisioning` returns, rebuild on `callmesh.config.v1`; the api saves with strict=True
    so an invalid scenario is refused with every problem listed;
  * ICM: keep one `icm.CallHistory` per tenant fed from `callmesh.calls.v1`; await the CRM
    lookup (with its deadline) before deciding and pass it as an `icm.PrefetchedSource`;
  * per request: fill `engine.LiveView` (presence, trunk channels in use, ICM sources), call
    `engine.plan` or `engine.resume` with `now`, map `Decision.verbs` to the contract, log
    `Decision.reason` and add it to the call's span, hand `Decision.state` back to sip-edge.
"""
