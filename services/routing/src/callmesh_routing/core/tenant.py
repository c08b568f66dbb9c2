"""A tenant's routing configuration, compiled once and then only read.

`TenantConfig.from_dict` is what the api calls when a tenant's configuration is saved (it
rejects the document listing every problem) and what routing calls when it refreshes its
cache; the compiled object (masks compiled, holiday calendars built, rate index filled) is
then shared by every decision for that tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .directory import Directory
from .lcr import LeastCostRouter
from .loading import LoadError, Problem, join, load
from .masks import Mask, MaskMatcher
from .numbers import NumberingPlan
from .scenario import NumberMaskStep, Scenario, parse_scenario, validate


@dataclass(slots=True)
class TenantConfig:
    tenant_id: str
    scenarios: tuple[Scenario, ...]
    default_scenario: str  # the default route: where failing calls go
    inbound: Mapping[str, str] = field(default_factory=dict)  # DID -> scenario id
    numbering: NumberingPlan = field(default_factory=NumberingPlan)
    directory: Directory = field(default_factory=Directory)
    allow_outside_numbers_from_menu: bool = False
    failure_prompt: str = "technical-difficulties"
    lcr: LeastCostRouter | None = None
    _scenarios: dict[str, Scenario] = field(init=False, repr=False)
    _inbound: dict[str, str] = field(init=False, repr=False)
    _matchers: dict[tuple[str, str], MaskMatcher[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Only what makes the configuration unusable stops it here. Dangling references
        # (a ring group deleted after the scenario was saved) must not: routing keeps taking
        # calls and sends those steps to the default route. `problems()` lists everything,
        # and the api refuses to save a configuration that has any.
        problems = self.problems()
        if any(_is_fatal(p) for p in problems):
            # Every problem, not only the fatal ones: whoever saves the document should see
            # everything at once, as with shape problems.
            raise LoadError(problems)
        self._scenarios = {s.id: s for s in self.scenarios}
        self._inbound = {
            self.numbering.to_e164(did) or did: target for did, target in self.inbound.items()
        }
        self._matchers = {}
        for scenario in self.scenarios:
            for step in scenario.steps.values():
                if isinstance(step, NumberMaskStep):
                    self._matchers[(scenario.id, step.id)] = MaskMatcher(
                        (Mask.parse(r.mask, r.priority), r.target) for r in step.routes
                    )

    def problems(self) -> list[Problem]:
        """Every problem across the tenant's scenarios and their references."""
        problems: list[Problem] = []
        ids = [s.id for s in self.scenarios]
        for index, scenario in enumerate(self.scenarios):
            if ids.index(scenario.id) != index:
                problems.append(Problem(f"scenarios.{index}.id", "duplicate scenario id"))
            for problem in validate(scenario, self.directory, self.numbering):
                problems.append(Problem(f"scenarios.{index}.{problem.path}", problem.message))
        if self.default_scenario not in ids:
            problems.append(
                Problem("default_scenario", f"unknown scenario {self.default_scenario!r}")
            )
        for did, target in self.inbound.items():
            if target not in ids:
                problems.append(Problem(f"inbound.{did}", f"unknown scenario {target!r}"))
            elif self.numbering.to_e164(did) is None:
                problems.append(Problem(f"inbound.{did}", "not a valid number"))
        return problems

    def scenario(self, scenario_id: str) -> Scenario | None:
        return self._scenarios.get(scenario_id)

    def scenario_for_did(self, did_e164: str) -> str | None:
        return self._inbound.get(did_e164)

    def mask_matcher(self, scenario_id: str, step_id: str) -> MaskMatcher[str] | None:
        return self._matchers.get((scenario_id, step_id))

    @classmethod
    def from_dict(
        cls, data: object, lcr: LeastCostRouter | None = None, strict: bool = True
    ) -> TenantConfig:
        """Load and compile; raise `LoadError` with every problem found.

        `strict` (the api's save path) rejects any problem; routing loads with
        strict=False so a stale reference degrades one step, not the whole tenant.
        LCR rate tables are large and arrive separately (bulk import), hence `lcr`.
        """
        problems: list[Problem] = []
        if not isinstance(data, Mapping):
            raise LoadError([Problem("", "expected an object")])
        allowed = {
            "tenant_id",
            "scenarios",
            "default_scenario",
            "inbound",
            "numbering",
            "directory",
            "allow_outside_numbers_from_menu",
            "failure_prompt",
        }
        for key in data:
            if key not in allowed:
                problems.append(Problem(str(key), "unknown field"))
        tenant_id = data.get("tenant_id")
        default_scenario = data.get("default_scenario")
        for key, value in (("tenant_id", tenant_id), ("default_scenario", default_scenario)):
            if not isinstance(value, str) or not value:
                problems.append(Problem(key, "is required (a non-empty string)"))
        numbering = load(NumberingPlan, data.get("numbering", {}), "numbering", problems)
        directory = load(Directory, data.get("directory", {}), "directory", problems)
        raw_scenarios = data.get("scenarios")
        scenarios: list[Scenario] = []
        if not isinstance(raw_scenarios, list) or not raw_scenarios:
            problems.append(Problem("scenarios", "is required (a list of scenarios)"))
        else:
            for index, raw in enumerate(raw_scenarios):
                loaded = parse_scenario(raw, join("scenarios", index), problems)
                if loaded is not None:
                    scenarios.append(loaded)
        inbound = data.get("inbound", {})
        if not isinstance(inbound, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in inbound.items()
        ):
            problems.append(Problem("inbound", "expected an object of DID -> scenario id"))
            inbound = {}
        allow_outside = data.get("allow_outside_numbers_from_menu", False)
        if not isinstance(allow_outside, bool):
            problems.append(Problem("allow_outside_numbers_from_menu", "expected bool"))
        failure_prompt = data.get("failure_prompt", "technical-difficulties")
        if not isinstance(failure_prompt, str) or not failure_prompt:
            problems.append(Problem("failure_prompt", "expected a non-empty string"))
        if problems:
            raise LoadError(problems)
        assert isinstance(tenant_id, str) and isinstance(default_scenario, str)
        assert numbering is not None and directory is not None
        tenant = cls(
            tenant_id,
            tuple(scenarios),
            default_scenario,
            dict(inbound),
            numbering,
            directory,
            allow_outside_numbers_from_menu=allow_outside is True,
            failure_prompt=str(failure_prompt),
            lcr=lcr,
        )
        if strict:
            problems = tenant.problems()
            if problems:
                raise LoadError(problems)
        return tenant


def _is_fatal(problem: Problem) -> bool:
    # No default route, ambiguous scenario ids or masks that do not compile leave nothing
    # sensible to run; everything else degrades to the default route at run time.
    if problem.path == "default_scenario" or problem.message == "duplicate scenario id":
        return True
    return ".routes." in problem.path and problem.path.endswith(".mask")
