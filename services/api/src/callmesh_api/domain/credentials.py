"""Secrets the api hands out: SIP passwords (stored only as digest HA1), API tokens (stored only
as SHA-256), and cabinet login passwords (argon2id).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Letters and digits only: phones' keypads and provisioning screens mangle punctuation.
_SIP_ALPHABET = string.ascii_letters + string.digits
SIP_PASSWORD_LENGTH = 20
TOKEN_PREFIX = "cm_"


def generate_sip_password(length: int = SIP_PASSWORD_LENGTH) -> str:
    return "".join(secrets.choice(_SIP_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class DigestSecrets:
    """HA1 = H(username ":" realm ":" password) for each algorithm a phone may use."""

    realm: str
    ha1_md5: str
    ha1_sha256: str


def digest_secrets(username: str, realm: str, password: str) -> DigestSecrets:
    material = f"{username}:{realm}:{password}".encode()
    return DigestSecrets(
        realm=realm,
        ha1_md5=hashlib.md5(material, usedforsecurity=False).hexdigest(),
        ha1_sha256=hashlib.sha256(material).hexdigest(),
    )


def generate_api_token() -> str:
    # 32 random bytes; the prefix makes leaked tokens easy to find in logs and repositories.
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginPasswords:
    """argon2id hashing of cabinet passwords, with the library's recommended parameters."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher()

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False
