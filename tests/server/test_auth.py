"""Auth providers: anonymous, delegated, mixed and token-file authentication."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from kora.server.auth import (
    AuthConfigError,
    AuthContext,
    AuthProvider,
    MixedAuthProvider,
    NoAuth,
    TokenAuthProvider,
    TokenFileAuthProvider,
)

ALICE = AuthContext(user_id="alice", scopes={"todos": {"owner": "alice"}})


async def validate(token: str) -> AuthContext | None:
    return ALICE if token == "good" else None


def test_auth_context_is_a_frozen_value() -> None:
    context = AuthContext(user_id="u")
    assert context.scopes is None
    assert context.metadata == {}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        context.user_id = "v"  # type: ignore[misc]
    assert AuthContext("u", {"a": {}}, {"k": 1}) == AuthContext("u", {"a": {}}, {"k": 1})


@pytest.mark.parametrize(
    "provider",
    [
        NoAuth(),
        TokenAuthProvider(validate=validate),
        MixedAuthProvider(primary=NoAuth(), anonymous_scopes={}),
        TokenFileAuthProvider.from_mapping({}),
    ],
)
def test_every_provider_satisfies_the_protocol(provider: object) -> None:
    assert isinstance(provider, AuthProvider)


@pytest.mark.parametrize("token", ["", "anything"])
async def test_no_auth_accepts_everyone_unscoped(token: str) -> None:
    assert await NoAuth().authenticate(token) == AuthContext(user_id="anonymous")


@pytest.mark.parametrize(("token", "expected"), [("good", ALICE), ("bad", None), ("", None)])
async def test_token_auth_delegates_to_validate(token: str, expected: AuthContext | None) -> None:
    assert await TokenAuthProvider(validate=validate).authenticate(token) == expected


# ------------------------------------------------------------------ mixed


MIXED = MixedAuthProvider(
    primary=TokenAuthProvider(validate=validate), anonymous_scopes={"responses": {}}
)


async def test_mixed_gives_a_missing_token_limited_anonymous_access() -> None:
    first = await MIXED.authenticate("")
    second = await MIXED.authenticate("")
    assert first is not None
    assert second is not None
    assert first.scopes == {"responses": {}}
    assert first.metadata == {"anonymous": True}
    assert first.user_id.startswith("anon-")
    assert len(first.user_id) == len("anon-") + 32
    assert first.user_id != second.user_id  # server-assigned, never shared


async def test_mixed_passes_a_valid_token_to_the_primary() -> None:
    assert await MIXED.authenticate("good") == ALICE


async def test_mixed_never_downgrades_a_rejected_token_to_anonymous() -> None:
    assert await MIXED.authenticate("expired-or-forged") is None


async def test_mixed_anonymous_prefix_is_configurable() -> None:
    provider = MixedAuthProvider(primary=NoAuth(), anonymous_scopes={}, anonymous_prefix="guest")
    context = await provider.authenticate("")
    assert context is not None
    assert context.user_id.startswith("guest-")
    assert context.scopes == {}


# ------------------------------------------------------------------ token file


TOKENS: dict[str, Any] = {
    "alice-token": {"user_id": "alice", "scopes": {"todos": {"owner": "alice"}}},
    "admin-token": {"user_id": "admin", "metadata": {"role": "admin"}},
    "alice-laptop": {"user_id": "alice", "scopes": None},
}


def write_tokens(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("alice-token", AuthContext("alice", {"todos": {"owner": "alice"}})),
        ("admin-token", AuthContext("admin", None, {"role": "admin"})),
        ("alice-laptop", AuthContext("alice")),
        ("", None),
        ("alice-toke", None),
        ("alice-token ", None),
        ("ALICE-TOKEN", None),
        ("unknown", None),
        ("\ud800", None),
    ],
)
async def test_token_file_authenticates_exact_tokens(
    tmp_path: Path, token: str, expected: AuthContext | None
) -> None:
    provider = TokenFileAuthProvider.from_file(write_tokens(tmp_path, TOKENS))
    assert await provider.authenticate(token) == expected


async def test_token_file_compares_every_token_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    provider = TokenFileAuthProvider.from_mapping(TOKENS)
    assert await provider.authenticate("alice-token") is not None
    assert len(calls) == len(TOKENS)  # no early exit on the first match
    calls.clear()
    assert await provider.authenticate("nope") is None
    assert len(calls) == len(TOKENS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (["alice-token"], "JSON object"),
        ({"": {"user_id": "a"}}, "non-empty string"),
        ({"t": "alice"}, "must map to an object"),
        ({"t": {}}, "user_id"),
        ({"t": {"user_id": ""}}, "user_id"),
        ({"t": {"user_id": 7}}, "user_id"),
        ({"t": {"user_id": "a", "scopes": ["todos"]}}, "scopes"),
        ({"t": {"user_id": "a", "scopes": {"todos": "all"}}}, "scopes"),
        ({"t": {"user_id": "a", "metadata": 3}}, "metadata"),
        ({"t": {"user_id": "a", "userId": "b"}}, "unknown keys"),
    ],
)
def test_token_file_rejects_malformed_content(
    tmp_path: Path, content: object, message: str
) -> None:
    with pytest.raises(AuthConfigError, match=message):
        TokenFileAuthProvider.from_file(write_tokens(tmp_path, content))


def test_token_file_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="cannot read"):
        TokenFileAuthProvider.from_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(AuthConfigError, match="cannot read"):
        TokenFileAuthProvider.from_file(broken)
