"""The demo tenant `make run` provisions through the public REST API (ARCHITECTURE §6).

Idempotent: a second `make run` finds the tenant, users and number in place and gives each demo
extension a fresh SIP password (passwords are shown once and stored only as digest hashes, so
printing them again means issuing new ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

DEMO_SLUG = "demo"
# Phones register to 127.0.0.1 locally, so that is the demo tenant's SIP domain and realm.
DEMO_SIP_DOMAIN = "127.0.0.1"
DEMO_EXTENSIONS = {"101": "Anna (demo)", "102": "Boris (demo)", "103": "Vera (demo)"}
DEMO_DID = "+74950000101"


def demo_routing_document() -> dict[str, Any]:
    """Internal calls between the demo extensions, and the DID: a greeting, then all three
    extensions ring at once; anything else hangs up. Routing validates it on save."""
    return {
        "default_scenario": "fallback",
        "numbering": {"default_region": "RU", "max_internal_digits": 3},
        "inbound": {DEMO_DID: "main"},
        "directory": {
            "users": [{"extension": ext, "name": name} for ext, name in DEMO_EXTENSIONS.items()],
            "ring_groups": [
                {
                    "name": "team",
                    "members": list(DEMO_EXTENSIONS),
                    "strategy": "all_at_once",
                    "no_answer_timeout": 30,
                }
            ],
            "prompts": ["hello-world"],
        },
        "scenarios": [
            {
                "id": "main",
                "name": "Demo DID: greeting, then the whole team rings",
                "start": "hello",
                "steps": {
                    "hello": {"kind": "greeting", "prompt": "hello-world", "next": "team"},
                    "team": {"kind": "ring_group", "group": "team"},
                },
            },
            {"id": "fallback", "start": "bye", "steps": {"bye": {"kind": "hangup"}}},
        ],
    }


class DemoError(RuntimeError):
    pass


@dataclass(frozen=True)
class DemoTenant:
    tenant_id: str
    sip_domain: str
    did: str
    passwords: dict[str, str]


async def provision_demo(base_url: str, token: str) -> DemoTenant:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(
        base_url=base_url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
    ) as http:

        async def call(
            method: str,
            path: str,
            body: Any = None,
            ok: tuple[int, ...] = (200,),
            query: dict[str, str] | None = None,
        ) -> Any:
            async with http.request(method, f"/api/v1{path}", json=body, params=query) as response:
                payload = await response.json()
                if response.status not in ok:
                    raise DemoError(f"{method} {path}: {response.status} {payload.get('detail')}")
                return payload

        found = await call("GET", "/tenants", query={"slug": DEMO_SLUG})
        if found["items"]:
            tenant = found["items"][0]
        else:
            tenant = await call(
                "POST",
                "/tenants",
                {
                    "slug": DEMO_SLUG,
                    "name": "Demo company",
                    "timezone": "Europe/Moscow",
                    "default_region": "RU",
                    "sip_domain": DEMO_SIP_DOMAIN,
                },
                ok=(201,),
            )
        base = f"/tenants/{tenant['id']}"
        passwords: dict[str, str] = {}
        for extension, name in DEMO_EXTENSIONS.items():
            existing = await call("GET", f"{base}/users", query={"extension": extension})
            if existing["items"]:
                creds = await call(
                    "POST", f"{base}/users/{existing['items'][0]['id']}/sip-password", ok=(201,)
                )
            else:
                user = await call(
                    "POST", f"{base}/users", {"name": name, "extension": extension}, ok=(201,)
                )
                creds = user["sip_credentials"]
            passwords[extension] = creds["password"]
        numbers = await call("GET", f"{base}/numbers", query={"e164": DEMO_DID})
        if not numbers["items"]:
            await call(
                "POST", f"{base}/numbers", {"e164": DEMO_DID, "description": "demo DID"}, ok=(201,)
            )
        await call(
            "PUT", f"{base}/routing-config", {"document": demo_routing_document()}, ok=(200,)
        )
        return DemoTenant(tenant["id"], tenant["sip_domain"], DEMO_DID, passwords)
