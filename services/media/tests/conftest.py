"""Shared fixtures for the media core tests: real packets captured by others, and pcap access."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from callmesh_media.dsp.g711 import PCMU, G711Codec

from .harness import MediaService, Phone, start_media

FIXTURES = Path(__file__).parent / "fixtures"
SIPP_SHARE = Path("/usr/share/sip-tester")


def _read_hex_lines(name: str) -> list[list[str]]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [line.split() for line in lines if line and not line.startswith("#")]


@pytest.fixture
def sipp_pcma_packets() -> list[bytes]:
    return [bytes.fromhex(fields[0]) for fields in _read_hex_lines("sipp_g711a_first_packets.hex")]


@pytest.fixture
def sipp_dtmf_1_packets() -> list[tuple[float, bytes]]:
    return [
        (float(fields[0]), bytes.fromhex(fields[1]))
        for fields in _read_hex_lines("sipp_dtmf_2833_1.hex")
    ]


def read_pcap_udp_payloads(path: Path) -> list[tuple[float, bytes]]:
    """UDP payloads of an Ethernet/IPv4 classic pcap file (what sipp ships), with times."""
    data = path.read_bytes()
    (magic,) = struct.unpack_from("<I", data)
    assert magic == 0xA1B2C3D4, "only little-endian microsecond pcap files are expected here"
    offset = 24
    packets: list[tuple[float, bytes]] = []
    while offset < len(data):
        seconds, micros, captured, _original = struct.unpack_from("<IIII", data, offset)
        offset += 16
        frame = data[offset : offset + captured]
        offset += captured
        ip_header = (frame[14] & 0x0F) * 4
        packets.append((seconds + micros / 1e6, frame[14 + ip_header + 8 :]))
    return packets


@pytest.fixture
def sipp_pcap() -> Callable[[str], list[tuple[float, bytes]]]:
    def load(name: str) -> list[tuple[float, bytes]]:
        path = SIPP_SHARE / name
        if not path.exists():
            pytest.skip(f"{path} not installed (Debian package sip-tester)")
        return read_pcap_udp_payloads(path)

    return load


@pytest.fixture
async def media(tmp_path: Path) -> AsyncIterator[MediaService]:
    """A media engine behind a real gRPC server, with an Events stream already open."""
    async for service in start_media(tmp_path):
        await service.start_events()
        yield service


@pytest.fixture
async def phones() -> AsyncIterator[Callable[..., Awaitable[Phone]]]:
    opened: list[Phone] = []

    async def open_phone(codec: G711Codec = PCMU) -> Phone:
        phone = await Phone.open(codec)
        opened.append(phone)
        return phone

    yield open_phone
    for phone in opened:
        phone.close()
