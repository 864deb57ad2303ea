"""Who may use a ``segkit serve`` app: the API key, the accepted ``Host`` names, cross-origin pages."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Sequence

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

# Host names of the loopback interface, as browsers and clients write them in the Host header.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="API key",
    description="The server's API key (segkit serve --api-key, or SEGKIT_API_KEY): `Authorization: Bearer KEY`.",
)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def api_key_dependency(api_key: str) -> Callable[..., None]:
    """A FastAPI dependency answering 401 unless the request carries ``Authorization: Bearer <api_key>``.

    Both keys are hashed first, so the comparison (:func:`hmac.compare_digest`, constant time)
    does not even reveal the key's length.
    """
    expected = _digest(api_key)

    def require_api_key(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008 (FastAPI's dependency idiom)
        if credentials is None or not hmac.compare_digest(_digest(credentials.credentials), expected):
            problem = "wrong API key" if credentials is not None else "this server needs an API key"
            raise HTTPException(
                401,
                f"{problem}: send it as the header 'Authorization: Bearer KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_api_key


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: assume it can be reached from elsewhere
        return False


def default_allowed_hosts(bind_host: str) -> tuple[str, ...] | None:
    """``Host`` names accepted when none are given: loopback names on a loopback address (this stops
    DNS rebinding: a web page of another site cannot call the local server through its own
    domain name), any on other addresses (the names users reach it by are not known here)."""
    return LOOPBACK_HOSTS if is_loopback(bind_host) else None


def add_access_middleware(app: FastAPI, allowed_hosts: Sequence[str] | None, cors_origins: Sequence[str]) -> None:
    """Refuse (400) requests for other ``Host`` names, and let the pages of ``cors_origins`` call the API.

    Without ``cors_origins`` no CORS header is sent, so browsers keep other sites' pages
    from reading the answers.
    """
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Server-Timing"],
        )
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
