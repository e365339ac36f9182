"""Configuration: YAML with ${VAR} substitution, validated once into frozen, typed values.

Every problem is collected and reported together, each naming its key and YAML line, so an operator
fixes a config in one pass; nothing starts half-configured (see ConfigError).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from yarl import URL

from gateway.forwarded import FORWARDING, GATEWAY_SET, HOP_BY_HOP, UNTRUSTED_ONLY, URL_OVERRIDES
from gateway.keys import SigningKey, UnusableKey, load_signing_key
from gateway.paths import PathError, PrefixTable, normalize_path
from gateway.policy import Access, build_rules
from gateway.tls_config import TlsConfig, UpstreamTlsConfig, listeners_collide

DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:9901"
DEFAULT_UPSTREAM_TIMEOUT = 30.0
DEFAULT_AUTH_TIMEOUT = 2.0
DEFAULT_CACHE_TTL = 300.0
DEFAULT_CACHE_MAX_ENTRIES = 100_000
DEFAULT_COOKIE = "session"
DEFAULT_USER_AGENT = "hamrah-web-server/1.0"
DEFAULT_LOGIN_URL = "/login"
DEFAULT_MAX_HEADER_BYTES = 8192
DEFAULT_SHUTDOWN_GRACE = 10.0
DEFAULT_IDENTITY_HEADERS = {"X-Auth-User-Id": "id", "X-Auth-User-Email": "email"}
DEFAULT_NEGATIVE_TTL = 0.0
DEFAULT_MAX_INFLIGHT = 128
DEFAULT_LOCAL_TTL = 5.0
DEFAULT_ASSERTION_HEADER = "X-Gateway-Assertion"
DEFAULT_ISSUER = "hamrah-gateway"
DEFAULT_ASSERTION_TTL = 60
DEFAULT_ASSERTION_CLAIMS = {"sub": "id", "email": "email"}
# Set by the gateway on every token; a configured claim may not replace one.
REGISTERED_CLAIMS = frozenset({"iss", "aud", "iat", "exp", "nbf", "jti", "sid"})
# Request headers the app needs as the client sent them: an assertion header by one of these
# names would remove the client's copy.
_CLIENT_HEADERS = frozenset({"cookie", "authorization"})
# Connection limits. A request's line and headers in 10 s (nginx waits 60, HAProxy's docs suggest
# a few seconds: a slowloris holds a connection for as long as this allows); idle keep-alive and
# body stalls as nginx (keepalive_timeout 75, client_body_timeout 60); 10,000 connections per
# process and 256 per client address (a browser opens 6 per host, a NAT of a large office a few
# hundred at most).
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 75.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_CONNECTIONS_PER_IP = 256
# Event loop lag that counts as overload (sustained, see gateway/limits.py); 0 turns shedding off.
DEFAULT_OVERLOAD_LAG = 0.1
# A session in steady use is revalidated in the background once this share of cache_ttl has
# passed, so its user never waits for the auth API and a revocation shows within one refresh.
DEFAULT_REFRESH_AHEAD = 0.8
# Off unless asked: serving a session the auth API could not confirm is the operator's trade-off.
DEFAULT_STALE_IF_ERROR = 0.0
# One process unless asked: each worker keeps its own cache and single flight (see README).
DEFAULT_WORKERS = 1
REDIS_URL_SCHEMES = frozenset({"redis", "rediss", "unix"})
RATE_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# RFC 7230 token: what a header name may contain.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_COOKIE_NAME = _TOKEN
_PLAIN_KEY = re.compile(r"^[\w.-]{1,60}$", re.ASCII)


class ConfigError(Exception):
    """One or more problems in a config file; str() lists each with its key and line."""

    exit_code = 2

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HostPort:
    """A parsed host:port listen address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Rate:
    """A limit such as 30/minute."""

    count: int
    period: float


@dataclass(frozen=True, slots=True)
class LoginTarget:
    """Where login_url sends people: its path as written and its own query ('' when none)."""

    path: str
    query: str


def parse_host_port(value: str) -> HostPort:
    """host:port, [v6]:port or v6-literal:port; ValueError saying what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    port = int(port_text)
    if not 0 <= port < 65536:
        raise ValueError(f"port out of range in {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return HostPort(host, port)


def parse_rate(value: str) -> Rate:
    """A count per second, minute or hour (30/minute); ValueError otherwise."""
    match = _RATE.match(value)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"expected a rate such as 30/minute, got {value!r}")
    return Rate(int(match.group(1)), RATE_PERIODS[match.group(2)])


def parse_network(value: str) -> Network:
    """An IP address or CIDR (host bits allowed); ValueError otherwise."""
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or CIDR: {value!r}") from None


def parse_login_url(value: str) -> LoginTarget:
    """A same-origin path with an optional query (/login?flow=web); ValueError otherwise."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        raise ValueError(f"must be a same-origin path such as /login, got {value!r}")
    path, _, query = value.partition("?")
    try:
        normalize_path(path)
    except PathError as exc:
        raise ValueError(f"{value!r} cannot be normalized: {exc}") from None
    return LoginTarget(path, query)


def _parsed_by(parse: Callable[[str], object]) -> AfterValidator:
    """Checks a string by parsing it; the string is kept as written (it is what is logged), and
    model_post_init keeps the parsed value."""

    def check(value: str) -> str:
        parse(value)
        return value

    return AfterValidator(check)


def _check_http_url(value: str) -> str:
    try:
        url = URL(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unparsable URL {value!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"expected an absolute http(s) URL, got {value!r}")
    if url.fragment:
        raise ValueError(f"URL must not have a fragment: {value!r}")
    return value


def _check_header_name(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid header name: {value!r}")
    return value


def _check_prefix(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"a path prefix must start with '/', got {value!r}")
    try:
        normalize_path(value)
    except PathError as exc:
        raise ValueError(f"path prefix {value!r} cannot be normalized: {exc}") from None
    return value


def _check_field_path(value: str) -> str:
    if not value or any(not part for part in value.split(".")):
        raise ValueError(f"empty field path {value!r}")
    return value


ListenAddress = Annotated[str, _parsed_by(parse_host_port)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]
PathPrefix = Annotated[str, AfterValidator(_check_prefix)]
Seconds = Annotated[float, Field(ge=0, le=86400)]
Cidr = Annotated[str, _parsed_by(parse_network)]
RateText = Annotated[str, _parsed_by(parse_rate)]
LoginUrl = Annotated[str, _parsed_by(parse_login_url)]
# A dotted path into the validate JSON (user.id): no part may be empty.
FieldPath = Annotated[str, AfterValidator(_check_field_path)]
PositiveSeconds = Annotated[float, Field(gt=0, le=3600)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with `update` applied; values parsed from the fields are parsed again."""
        copied = super().model_copy(update=update, deep=deep)
        if update:
            copied.model_post_init(None)
        return copied


def check_redis_url(value: str) -> str:
    """The URL as given when redis-py can connect to it; its scheme is named otherwise.

    The URL itself is left out of the message: it often carries the Redis password.
    """
    scheme = URL(value).scheme
    if scheme not in REDIS_URL_SCHEMES:
        given = f"scheme {scheme!r}" if scheme else "no scheme"
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {given}")
    return value


RedisUrl = Annotated[str, AfterValidator(check_redis_url)]


class SharedCacheConfig(_Model):
    """Where validations are shared between replicas (memory: this process only)."""

    backend: Literal["memory", "redis"] = "memory"
    url: RedisUrl | None = None
    secret: str | None = None
    local_ttl: Seconds = DEFAULT_LOCAL_TTL

    @model_validator(mode="after")
    def _redis_needs_url_and_secret(self) -> SharedCacheConfig:
        if self.backend == "redis" and (not self.url or not self.secret):
            raise ValueError("backend redis needs url and secret (the HMAC key for cookie hashes)")
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError("secret must be at least 16 characters")
        return self


class AuthConfig(_Model):
    """How sessions are validated against the auth API."""

    validate_url: HttpUrl
    cookie: str = DEFAULT_COOKIE
    timeout: PositiveSeconds = DEFAULT_AUTH_TIMEOUT
    cache_ttl: Seconds = DEFAULT_CACHE_TTL
    cache_max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = DEFAULT_CACHE_MAX_ENTRIES
    cache: SharedCacheConfig = Field(default_factory=SharedCacheConfig)
    user_agent: str = DEFAULT_USER_AGENT
    identity_headers: dict[HeaderName, FieldPath] = Field(
        default_factory=lambda: dict(DEFAULT_IDENTITY_HEADERS)
    )
    negative_ttl: Seconds = DEFAULT_NEGATIVE_TTL
    max_inflight: Annotated[int, Field(ge=1, le=100_000)] = DEFAULT_MAX_INFLIGHT
    unknown_session_limit: RateText | None = None
    refresh_ahead: Annotated[float, Field(ge=0, lt=1)] = DEFAULT_REFRESH_AHEAD
    stale_if_error: Seconds = DEFAULT_STALE_IF_ERROR

    _unknown_session_rate: Rate | None = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        """Keep the parsed form of unknown_session_limit, which its validator has checked."""
        limit = self.unknown_session_limit
        self._unknown_session_rate = None if limit is None else parse_rate(limit)

    @property
    def unknown_session_rate(self) -> Rate | None:
        """unknown_session_limit as a Rate, or None for no limit."""
        return self._unknown_session_rate

    @field_validator("cookie")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        if not _COOKIE_NAME.match(value):
            raise ValueError(f"not a valid cookie name: {value!r}")
        return value

    @field_validator("identity_headers")
    @classmethod
    def _distinct_headers(cls, value: dict[str, str]) -> dict[str, str]:
        lowered = [name.lower() for name in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError("identity header names must differ case-insensitively")
        return value

    @field_validator("user_agent")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("must not contain control characters")
        return value


JSON_SCALAR = str | int | float | bool


class Condition(_Model):
    """One test on a field of the validate JSON; exactly one of the four is set."""

    equals: JSON_SCALAR | None = None
    in_: list[JSON_SCALAR] | None = Field(default=None, alias="in")
    contains: JSON_SCALAR | None = None
    ends_with: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        chosen = [
            k for k in ("equals", "in_", "contains", "ends_with") if getattr(self, k) is not None
        ]
        if len(chosen) != 1:
            raise ValueError("a condition is exactly one of equals, in, contains, ends_with")
        return self


def _prefix_shorthand(value: Any) -> Any:
    return {"prefix": value} if isinstance(value, str) else value


class ProtectRule(_Model):
    """A protected prefix, optionally with conditions on the session's identity."""

    prefix: PathPrefix
    require: dict[FieldPath, Condition] = Field(default_factory=dict)


def _signing_key(value: Any) -> SigningKey:
    if not isinstance(value, str) or not value:
        raise ValueError("expected the path of a PEM file")
    try:
        return load_signing_key(value)
    except UnusableKey as exc:
        raise ValueError(str(exc)) from None


# Read and checked while the config is validated, so a bad key file is a config error with its
# line; logged (effective config) as its path and kid only.
KeyFile = Annotated[
    SigningKey,
    PlainValidator(_signing_key),
    PlainSerializer(lambda key: {"path": key.path, "kid": key.kid}),
]


def _printable_text(value: str) -> str:
    if not value or not value.isprintable():
        raise ValueError("must be non-empty printable text")
    return value


class AssertionConfig(_Model):
    """The signed identity (a JWT) sent upstream beside the identity headers."""

    header: HeaderName = DEFAULT_ASSERTION_HEADER
    keys: Annotated[list[KeyFile], Field(min_length=1)]
    issuer: Annotated[str, AfterValidator(_printable_text)] = DEFAULT_ISSUER
    audience: Annotated[str, AfterValidator(_printable_text)] | None = None
    ttl: Annotated[int, Field(ge=10, le=3600)] = DEFAULT_ASSERTION_TTL
    claims: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ASSERTION_CLAIMS))

    @field_validator("keys")
    @classmethod
    def _distinct_keys(cls, value: list[SigningKey]) -> list[SigningKey]:
        kids = [key.kid for key in value]
        if len(set(kids)) != len(kids):
            raise ValueError("the same key is listed twice")
        return value

    @field_validator("claims")
    @classmethod
    def _claim_fields(cls, value: dict[str, str]) -> dict[str, str]:
        if "sub" not in value:
            raise ValueError("sub is required (the field that identifies the user, e.g. sub: id)")
        reserved = sorted(REGISTERED_CLAIMS & set(value))
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: set by the gateway, not configurable")
        for claim, dotted in value.items():
            if not claim or not dotted or any(not part for part in dotted.split(".")):
                raise ValueError(f"{claim}: empty field path {dotted!r}")
        return value


class RouteConfig(_Model):
    """A prefix served by another upstream."""

    prefix: PathPrefix
    upstream: HttpUrl
    strip_prefix: bool = False
    timeout: PositiveSeconds | None = None
    upstream_tls: UpstreamTlsConfig | None = None


class LogConfig(_Model):
    """Log level and rendering."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class LimitsConfig(_Model):
    """Deadlines and caps at the connection level (README "Connection limits" says why each)."""

    header_timeout: PositiveSeconds = DEFAULT_HEADER_TIMEOUT
    idle_timeout: PositiveSeconds = DEFAULT_IDLE_TIMEOUT
    body_timeout: PositiveSeconds = DEFAULT_BODY_TIMEOUT
    max_connections: Annotated[int, Field(ge=16, le=1_000_000)] = DEFAULT_MAX_CONNECTIONS
    max_connections_per_ip: Annotated[int, Field(ge=1, le=1_000_000)] = (
        DEFAULT_MAX_CONNECTIONS_PER_IP
    )
    max_body_bytes: Annotated[int, Field(ge=1)] | None = None
    overload_lag: Annotated[float, Field(ge=0, le=10)] = DEFAULT_OVERLOAD_LAG


class GatewayConfig(_Model):
    """The whole gateway configuration, as validated from YAML."""

    listen: ListenAddress = DEFAULT_LISTEN
    upstream: HttpUrl
    upstream_timeout: PositiveSeconds = DEFAULT_UPSTREAM_TIMEOUT
    auth: AuthConfig
    routes: list[RouteConfig] = Field(default_factory=list)
    protect: list[Annotated[ProtectRule, BeforeValidator(_prefix_shorthand)]] = Field(
        default_factory=list
    )
    public: list[PathPrefix] = Field(default_factory=list)
    optional: list[PathPrefix] = Field(default_factory=list)
    login_url: LoginUrl = DEFAULT_LOGIN_URL
    trusted_proxies: list[Cidr] = Field(default_factory=list)
    admin_listen: ListenAddress | None = DEFAULT_ADMIN_LISTEN
    max_header_bytes: Annotated[int, Field(ge=1024, le=65536)] = DEFAULT_MAX_HEADER_BYTES
    shutdown_grace: Annotated[float, Field(ge=0, le=3600)] = DEFAULT_SHUTDOWN_GRACE
    log: LogConfig = Field(default_factory=LogConfig)
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = DEFAULT_WORKERS
    admin_token: str | None = None
    assertion: AssertionConfig | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    tls: TlsConfig | None = None
    upstream_tls: UpstreamTlsConfig | None = None

    _listen_address: HostPort = PrivateAttr()
    _redirect_address: HostPort | None = PrivateAttr()
    _admin_address: HostPort | None = PrivateAttr()
    _trusted_networks: tuple[Network, ...] = PrivateAttr()
    _login_target: LoginTarget = PrivateAttr()

    @field_validator("admin_token")
    @classmethod
    def _token_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("admin_token must be at least 16 characters")
        return value

    def model_post_init(self, context: Any) -> None:
        """Keep the parsed form of the fields below, which their validators have checked."""
        admin = self.admin_listen
        self._listen_address = parse_host_port(self.listen)
        self._admin_address = None if admin is None else parse_host_port(admin)
        self._trusted_networks = tuple(parse_network(c) for c in self.trusted_proxies)
        self._login_target = parse_login_url(self.login_url)
        redirect = None if self.tls is None else self.tls.redirect_http
        self._redirect_address = None if redirect is None else parse_host_port(redirect)

    @property
    def listen_address(self) -> HostPort:
        return self._listen_address

    @property
    def admin_address(self) -> HostPort | None:
        """None when admin_listen is off (null)."""
        return self._admin_address

    @property
    def redirect_address(self) -> HostPort | None:
        """The plain listener that sends browsers to https (tls.redirect_http), if any."""
        return self._redirect_address

    @property
    def worker_count(self) -> int:
        return (os.cpu_count() or 1) if self.workers == "auto" else self.workers

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        return self._trusted_networks

    @property
    def login_path(self) -> str:
        """The path of login_url, as written (redirects send people there)."""
        return self._login_target.path

    @property
    def login_query(self) -> str:
        """login_url's own query, '' when it has none; a redirect appends next= to it."""
        return self._login_target.query


class _LineTracker:
    """Maps a key path (('auth', 'timeout')) to the YAML line it was written on."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str | int, ...], int] = {}

    def line_for(self, loc: Sequence[str | int]) -> int | None:
        path = tuple(loc)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def _substitute(text: str, env: Mapping[str, str], missing: list[str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _ENV_REF.sub(repl, text)


def _walk(
    node: yaml.Node,
    loader: yaml.SafeLoader,
    path: tuple[str | int, ...],
    tracker: _LineTracker,
    env: Mapping[str, str],
    problems: list[str],
) -> None:
    """Substitute ${VAR} in scalars, record each key's line, and refuse duplicate keys."""
    tracker.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        if "${" in node.value:
            missing: list[str] = []
            node.value = _substitute(node.value, env, missing)
            for name in missing:
                problems.append(
                    f"{_dotted(path)}: environment variable {name} is not set and has no default"
                    f" (line {node.start_mark.line + 1})"
                )
            if node.style is None:
                node.tag = loader.resolve(  # type: ignore[no-untyped-call]
                    yaml.ScalarNode, node.value, (True, False)
                )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, loader, (*path, index), tracker, env, problems)
    elif isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append(
                    f"{_dotted((*path, key))}: duplicate key (line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
            _walk(value_node, loader, (*path, key), tracker, env, problems)
            tracker.lines[(*path, key)] = key_node.start_mark.line + 1


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        # A key that is not a plain word is quoted, so a problem always fits on one line.
        name = part if _PLAIN_KEY.match(part) else repr(part)[:60]
        text += f".{name}" if text else name
    return text or "(top level)"


def _pydantic_problems(exc: ValidationError, tracker: _LineTracker) -> list[str]:
    problems = []
    for error in exc.errors():
        # Unions and annotated validators add their type names to loc: keep only the parts that
        # are keys or indexes of the YAML (or the name of a missing key).
        loc: list[str | int] = []
        for index, part in enumerate(error["loc"]):
            last = index == len(error["loc"]) - 1
            if (*loc, part) in tracker.lines or (last and error["type"] == "missing"):
                loc.append(part)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        line = tracker.line_for(loc)
        where = f" (line {line})" if line is not None else ""
        problems.append(f"{_dotted(loc)}: {message}{where}")
    return problems


def _cross_checks(config: GatewayConfig, tracker: _LineTracker) -> list[str]:
    """Checks that span keys: rules that cannot both hold, and a login page that would loop."""
    problems = []

    def at(loc: tuple[str | int, ...]) -> str:
        line = tracker.line_for(loc)
        return f" (line {line})" if line is not None else ""

    try:
        rules = build_rules(config)
    except (ValueError, PathError) as exc:
        problems.append(f"protect/public/optional: {exc}{at(('protect',))}")
    else:
        login_rule = rules.lookup(normalize_path(config.login_path))
        if login_rule is not None and login_rule.access is Access.PROTECT:
            problems.append(
                f"login_url: {config.login_url!r} falls under a protected prefix, so sending"
                f" people to sign in would loop; add it to public or move it{at(('login_url',))}"
            )
    if config.assertion is not None:
        taken = {name.lower() for name in config.auth.identity_headers} | _CLIENT_HEADERS
        taken |= HOP_BY_HOP | URL_OVERRIDES | FORWARDING | UNTRUSTED_ONLY | GATEWAY_SET
        if config.assertion.header.lower().replace("_", "-") in taken:
            problems.append(
                f"assertion.header: {config.assertion.header!r} is a header the gateway or the"
                f" client already sets; choose another name{at(('assertion', 'header'))}"
            )
    try:
        PrefixTable([(route.prefix, route) for route in config.routes])
    except (ValueError, PathError) as exc:
        problems.append(f"routes: {exc}{at(('routes',))}")
    redirect = config.redirect_address
    if redirect is not None and listeners_collide(
        (redirect.host, redirect.port), (config.listen_address.host, config.listen_address.port)
    ):
        problems.append(
            f"tls.redirect_http: {redirect} takes the port of listen ({config.listen}); the plain"
            f" redirect listener needs a port of its own{at(('tls', 'redirect_http'))}"
        )
    return problems


def parse_config(
    text: str, source: str = "<config>", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Parse and validate YAML text; raise ConfigError listing every problem."""
    environ = os.environ if env is None else env
    tracker = _LineTracker()
    problems: list[str] = []
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise ConfigError(source, ["(top level): the file is empty"])
            _walk(node, loader, (), tracker, environ, problems)
            data: Any = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, [f"(yaml): {problem}{where}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of keys"])
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, tracker))
        raise ConfigError(source, problems) from None
    problems.extend(_cross_checks(config, tracker))
    if problems:
        raise ConfigError(source, problems)
    return config


def read_config_text(path: str | Path) -> str:
    """The text of a config file, or a ConfigError saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"(file): cannot read: {exc}"]) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate a config file."""
    return parse_config(read_config_text(path), str(path), env)
