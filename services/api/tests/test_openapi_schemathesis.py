"""Schemathesis against the served OpenAPI document: no server error, no response that breaks
the document, for generated valid and invalid requests, on a real server and database."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web
from callmesh_api.config_service import ConfigService
from callmesh_api.rest import build_rest_app

from .conftest import PLATFORM_TOKEN

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


async def test_generated_requests_never_break_the_server_or_the_document(
    config_service: ConfigService, tmp_path: Path
) -> None:
    runner = web.AppRunner(build_rest_app(config_service))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"http://127.0.0.1:{port}/api/v1/openapi.json",
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {PLATFORM_TOKEN}",
            "--max-examples",
            "12",
            "--seed",
            "20261123",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-database",
            "none",
            # Saving a routing configuration needs routing's validation (503 without it); it is
            # exercised with the real routing service in tests/test_routing_config.py.
            "--exclude-path-regex",
            "routing-config",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=400)
    finally:
        await runner.cleanup()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
