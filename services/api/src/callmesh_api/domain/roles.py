"""Who is asking, and what they may see or change.

The rights model (after the INTELVOX seed): a platform admin runs the whole platform; a tenant
admin configures their tenant; a supervisor sees the departments they manage (their people,
their calls) and changes nothing; an agent sees only their own calls, recordings and voicemail.
Anything outside a principal's view is reported as *not found*, never *forbidden*, so one
tenant cannot even learn that another tenant's resource exists.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field


class Role(enum.StrEnum):
    PLATFORM_ADMIN = "platform_admin"
    TENANT_ADMIN = "tenant_admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"


TENANT_ROLES = (Role.TENANT_ADMIN, Role.SUPERVISOR, Role.AGENT)


@dataclass(frozen=True)
class Principal:
    role: Role
    tenant_id: uuid.UUID | None
    user_id: uuid.UUID | None = None
    managed_departments: frozenset[uuid.UUID] = field(default_factory=frozenset)
    name: str = ""

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        who = f"user:{self.user_id}" if self.user_id else f"token:{self.name}"
        return f"{self.role.value}/{who}"

    def sees_tenant(self, tenant_id: uuid.UUID) -> bool:
        return self.role is Role.PLATFORM_ADMIN or self.tenant_id == tenant_id

    def configures_tenant(self, tenant_id: uuid.UUID) -> bool:
        if self.role is Role.PLATFORM_ADMIN:
            return True
        return self.role is Role.TENANT_ADMIN and self.tenant_id == tenant_id

    def reads_tenant_config(self, tenant_id: uuid.UUID) -> bool:
        """Numbers, trunks and scenarios: admins only (supervisors manage people, not wiring)."""
        return self.configures_tenant(tenant_id)

    def user_scope(self) -> UserScope:
        if self.role in (Role.PLATFORM_ADMIN, Role.TENANT_ADMIN):
            return UserScope(all_users=True)
        if self.role is Role.SUPERVISOR:
            return UserScope(departments=self.managed_departments, self_id=self.user_id)
        return UserScope(self_id=self.user_id)


@dataclass(frozen=True)
class UserScope:
    """Which users a principal may see inside a tenant it sees."""

    all_users: bool = False
    departments: frozenset[uuid.UUID] = field(default_factory=frozenset)
    self_id: uuid.UUID | None = None

    def allows(self, user_id: uuid.UUID, department_id: uuid.UUID | None) -> bool:
        if self.all_users or user_id == self.self_id:
            return True
        return department_id is not None and department_id in self.departments
