"""A static ``TokenCredential`` for tests that talk to the ARM emulator (never for product code).

The emulator accepts any bearer token, so this hands out a fixed one. It implements both the classic
``get_token`` protocol and the newer ``get_token_info`` one, so whichever azure-core asks for works.
"""

from __future__ import annotations

import time
from typing import Any, Self

from azure.core.credentials import AccessToken, AccessTokenInfo

DEFAULT_TOKEN = "arm-emulator-test-token"


class StaticTokenCredential:
    """``credential=StaticTokenCredential()`` for ComputeManagementClient & co. against the emulator."""

    def __init__(self, token: str = DEFAULT_TOKEN, lifetime_seconds: int = 3600) -> None:
        self.token = token
        self.lifetime_seconds = lifetime_seconds
        self.calls: list[tuple[str, ...]] = []  # the scopes asked for, for assertions

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(tuple(scopes))
        return AccessToken(self.token, int(time.time()) + self.lifetime_seconds)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.calls.append(tuple(scopes))
        return AccessTokenInfo(self.token, int(time.time()) + self.lifetime_seconds)

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
