"""The `tls:` and `upstream_tls:` keys: validated into frozen values like the rest of the config.

Only what can be checked without loading a key is checked here (a file that is missing or cannot be
read, a key without its certificate, a TLS version that is too old); whether a pair loads and is
valid now is decided by gateway/tls.py, at start-up and at every reload.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# One year: what browsers' HSTS preload lists ask for as a minimum, and the contract's example.
DEFAULT_HSTS_SECONDS = 31_536_000
# Mozilla's "intermediate" profile: TLS 1.2 for the clients that still need it (older Android,
# Java 8), 1.3 for everyone else.
DEFAULT_MIN_VERSION = "1.2"
TLS_VERSIONS = ("1.2", "1.3")
# Two years, the longest HSTS max-age anyone recommends; longer is almost surely a typo.
MAX_HSTS_SECONDS = 2 * 31_536_000


def check_readable_file(value: str) -> str:
    """A path to a regular file this process can read; ValueError naming what is wrong."""
    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value!r}")
    if not os.access(value, os.R_OK):
        raise ValueError(f"not readable by this process: {value!r}")
    return value


def _version_text(value: Any) -> Any:
    # YAML reads an unquoted 1.2 as a number; the key means the same either way.
    return f"{value:.1f}" if isinstance(value, float) else value


def _check_version(value: str) -> str:
    if value not in TLS_VERSIONS:
        raise ValueError(f'must be "1.2" or "1.3" (older TLS versions are broken), got {value!r}')
    return value


def _check_listen(value: str) -> str:
    # Imported here: gateway/config.py imports this module, and parses listen addresses.
    from gateway.config import parse_host_port

    parse_host_port(value)
    return value


ReadableFile = Annotated[str, AfterValidator(check_readable_file)]
TlsVersion = Annotated[str, BeforeValidator(_version_text), AfterValidator(_check_version)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Frozen):
    """The client-facing listener's TLS: its certificate, and what a browser is told about it."""

    cert_file: ReadableFile
    key_file: ReadableFile
    min_version: TlsVersion = DEFAULT_MIN_VERSION
    watch: bool = True
    redirect_http: Annotated[str, AfterValidator(_check_listen)] | None = None
    hsts: Annotated[int, Field(ge=0, le=MAX_HSTS_SECONDS)] = DEFAULT_HSTS_SECONDS

    @property
    def hsts_header(self) -> str | None:
        """The Strict-Transport-Security value, or None for hsts: 0."""
        return f"max-age={self.hsts}" if self.hsts else None


class UpstreamTlsConfig(_Frozen):
    """How the gateway checks an https upstream, and the certificate it shows one (mutual TLS).

    There is no switch to turn verification off: an upstream that cannot be verified is a 502.
    """

    ca_file: ReadableFile | None = None
    client_cert: ReadableFile | None = None
    client_key: ReadableFile | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTlsConfig:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert (the certificate it belongs to)")
        return self


def listeners_collide(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether two host:port listen addresses would take the same port (0: any free one)."""
    wildcard = {"", "0.0.0.0", "::"}
    (host_a, port_a), (host_b, port_b) = first, second
    return port_a == port_b != 0 and (host_a == host_b or host_a in wildcard or host_b in wildcard)
