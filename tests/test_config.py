"""Config loading: typed values, ${VAR} substitution, and every problem named with key and line."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.config import ConfigError, HostPort, Rate, parse_config

BASE = """\
upstream: http://frontend:3000
auth:
  validate_url: http://api:8787/api/auth/sessions/validate
protect: [/dashboard]
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml", env or {})
    return list(caught.value.problems)


def test_minimal_config_gets_documented_defaults() -> None:
    """A config with only the required keys gets the defaults the README documents."""
    config = parse_config(BASE, env={})
    assert config.listen == "0.0.0.0:8080"
    assert config.upstream_timeout == 30.0
    assert config.auth.cookie == "session"
    assert config.auth.timeout == 2.0
    assert config.auth.cache_ttl == 300
    assert config.auth.refresh_ahead == 0.8
    assert config.auth.stale_if_error == 0
    assert config.auth.user_agent == "hamrah-web-server/1.0"
    assert config.auth.identity_headers == {"X-Auth-User-Id": "id", "X-Auth-User-Email": "email"}
    assert config.login_url == "/login"
    assert config.admin_listen == "127.0.0.1:9901"
    assert config.max_header_bytes == 8192
    assert config.log.format == "json"


def test_config_is_frozen() -> None:
    """Config values cannot be changed after start-up."""
    config = parse_config(BASE, env={})
    with pytest.raises(ValueError):
        config.upstream = "http://other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("upstream: ${UP}", {"UP": "http://x:1"}, "http://x:1"),
        ("upstream: ${UP:-http://fallback:2}", {}, "http://fallback:2"),
        ("upstream: ${UP:-http://fallback:2}", {"UP": ""}, "http://fallback:2"),
        ("upstream: http://${HOST}:${PORT}/app", {"HOST": "h", "PORT": "9"}, "http://h:9/app"),
        ('upstream: "${UP:-http://quoted:3}"', {}, "http://quoted:3"),
    ],
    ids=["set", "default", "empty-uses-default", "inside-value", "quoted"],
)
def test_env_substitution_anywhere_in_a_value(
    text: str, env: dict[str, str], expected: str
) -> None:
    """${VAR} and ${VAR:-default} are substituted in any value."""
    rest = BASE.split("\n", 1)[1]
    config = parse_config(f"{text}\n{rest}", env=env)
    assert config.upstream == expected


def test_substituted_number_keeps_its_type() -> None:
    """A substituted plain scalar is typed as YAML would type the value written in place."""
    config = parse_config(BASE + "upstream_timeout: ${T:-12.5}\n", env={})
    assert config.upstream_timeout == 12.5


def test_missing_env_var_without_default_is_named() -> None:
    """An unset variable with no default is a problem naming the variable, key and line."""
    problems = problems_of(BASE + "login_url: ${LOGIN}\n")
    assert any("LOGIN" in p and "login_url" in p and "line 5" in p for p in problems)


@pytest.mark.parametrize(
    ("extra", "key", "line"),
    [
        ("colour: blue\n", "colour", 5),
        ("auth_timeout: 3\n", "auth_timeout", 5),
        ("upstream_timeout: soon\n", "upstream_timeout", 5),
        ("upstream_timeout: -1\n", "upstream_timeout", 5),
        ("max_header_bytes: 10\n", "max_header_bytes", 5),
        ("listen: nowhere\n", "listen", 5),
        ("listen: 1.2.3.4:99999\n", "listen", 5),
        ("trusted_proxies: [10.0.0.0/8, not-a-cidr]\n", "trusted_proxies[1]", 5),
        ("log:\n  format: xml\n", "log.format", 6),
        ("log:\n  level: loud\n", "log.level", 6),
        ("public: [relative]\n", "public[0]", 5),
        ("login_url: https://evil.example/login\n", "login_url", 5),
        ("login_url: //evil.example\n", "login_url", 5),
    ],
    ids=lambda v: str(v).strip()[:30],
)
def test_bad_value_names_key_and_line(extra: str, key: str, line: int) -> None:
    """A wrong type, unknown key or bad value is reported with its dotted key and YAML line."""
    problems = problems_of(BASE + extra)
    assert any(p.startswith(f"{key}:") and f"(line {line})" in p for p in problems), problems


AUTH_LINE = "  validate_url: http://api:8787/api/auth/sessions/validate\n"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("refresh_ahead: 1", "auth.refresh_ahead"),
        ("refresh_ahead: 1.5", "auth.refresh_ahead"),
        ("refresh_ahead: -0.1", "auth.refresh_ahead"),
        ("refresh_ahead: soon", "auth.refresh_ahead"),
        ("stale_if_error: -1", "auth.stale_if_error"),
        ("stale_if_error: 86401", "auth.stale_if_error"),
        ("stale_if_error: later", "auth.stale_if_error"),
    ],
    ids=lambda v: str(v).strip()[:30],
)
def test_bad_refresh_or_stale_setting_names_key_and_line(extra: str, key: str) -> None:
    """refresh_ahead outside 0 <= x < 1 or a bad stale_if_error names its dotted key and line."""
    problems = problems_of(BASE.replace(AUTH_LINE, f"{AUTH_LINE}  {extra}\n"))
    assert any(p.startswith(f"{key}:") and "(line 4)" in p for p in problems), problems


@pytest.mark.parametrize(
    ("extra", "refresh", "stale"),
    [("refresh_ahead: 0", 0.0, 0.0), ("stale_if_error: 300", 0.8, 300.0)],
    ids=["refresh-off", "stale-300"],
)
def test_refresh_and_stale_settings_are_typed(extra: str, refresh: float, stale: float) -> None:
    """refresh_ahead 0 (off) and stale_if_error seconds are accepted as floats."""
    auth = parse_config(BASE.replace(AUTH_LINE, f"{AUTH_LINE}  {extra}\n"), env={}).auth
    assert (auth.refresh_ahead, auth.stale_if_error) == (refresh, stale)


@pytest.mark.parametrize(
    ("url_key", "value"),
    [
        ("upstream", "frontend:3000"),
        ("upstream", "ftp://frontend"),
        ("upstream", "http://"),
        ("upstream", "http://[::1"),
    ],
)
def test_unparsable_url_is_refused(url_key: str, value: str) -> None:
    """Upstream URLs must be absolute http(s) URLs."""
    text = BASE.replace("http://frontend:3000", value)
    problems = problems_of(text)
    assert any(p.startswith(f"{url_key}:") and "(line 1)" in p for p in problems), problems


def test_unknown_nested_key_is_refused() -> None:
    """Unknown keys inside a section are refused too, with their full path."""
    problems = problems_of(BASE + "auth:\n  validate_url: http://a:1/v\n  cache_tll: 5\n")
    assert any(p.startswith("auth.cache_tll: unknown key (line 7)") for p in problems), problems


def test_duplicate_key_is_refused() -> None:
    """A key written twice is an error, not a silent override."""
    problems = problems_of(BASE + "protect: [/settings]\n")
    assert any("protect: duplicate key (line 5)" in p for p in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    """Every problem is collected before failing, so one pass fixes the file."""
    problems = problems_of(BASE + "colour: blue\nupstream_timeout: soon\nlog:\n  format: xml\n")
    assert len(problems) >= 3


@pytest.mark.parametrize(
    ("protect", "login"),
    [
        ("[/]", "/login"),
        ("[/login]", "/login"),
        ("[/LOGIN]", "/login?x=1"),
        ("[/auth]", "/auth/in"),
    ],
)
def test_login_url_under_protected_prefix_would_loop(protect: str, login: str) -> None:
    """A login_url that falls under a protected prefix is refused: it would redirect forever."""
    text = BASE.replace("protect: [/dashboard]", f"protect: {protect}") + f"login_url: {login}\n"
    problems = problems_of(text)
    assert any(p.startswith("login_url:") and "loop" in p for p in problems), problems


def test_login_url_made_public_inside_protected_prefix_is_allowed() -> None:
    """A login page exempted with public: inside a protected prefix does not loop."""
    text = BASE.replace("protect: [/dashboard]", "protect: [/]") + "public: [/login]\n"
    assert parse_config(text, env={}).login_url == "/login"


def test_missing_required_keys_are_named() -> None:
    """Required keys that are absent are each named."""
    problems = problems_of("listen: 0.0.0.0:8080\n")
    assert any(p.startswith("upstream: required") for p in problems)
    assert any(p.startswith("auth: required") for p in problems)


@pytest.mark.parametrize(
    "text",
    ["", "- a\n- b\n", "upstream: [unclosed\n", "a: b: c\n"],
    ids=["empty", "list", "yaml", "colon"],
)
def test_unreadable_yaml_is_a_config_error(text: str) -> None:
    """Empty files, non-mappings and YAML syntax errors are config errors, not crashes."""
    assert problems_of(text)


def test_duplicate_rule_prefix_is_refused() -> None:
    """The same prefix in protect and public is ambiguous and refused."""
    problems = problems_of(BASE + "public: [/Dashboard/]\n")
    assert any("protect/public" in p for p in problems), problems


@pytest.mark.parametrize("url", ["http://:hunter2@cache:6379", "cache:6379", ""])
def test_shared_cache_url_must_be_a_redis_url(url: str) -> None:
    """auth.cache.url must be redis://, rediss:// or unix://; the refusal never shows the URL."""
    cache = f'  cache:\n    backend: redis\n    url: "{url}"\n    secret: s3cret-s3cret-s3cret\n'
    text = BASE.replace("/validate\n", "/validate\n" + cache)
    problems = problems_of(text)
    assert any(p.startswith("auth.cache.url:") and "(line 6)" in p for p in problems), problems
    assert not any("hunter2" in p for p in problems)


def with_header_field(field: str) -> str:
    return BASE.replace("/validate\n", f'/validate\n  identity_headers:\n    X-Id: "{field}"\n')


def with_required_field(field: str) -> str:
    rule = f'protect:\n  - prefix: /a\n    require:\n      "{field}": {{equals: 1}}\n'
    return BASE.replace("protect: [/dashboard]\n", rule)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        (with_header_field("user..id"), "auth.identity_headers.X-Id", 5),
        (with_header_field(""), "auth.identity_headers.X-Id", 5),
        (with_required_field("user."), "protect[0].require", 7),
        (with_required_field(""), "protect[0].require", 7),
    ],
    ids=["header-inner", "header-empty", "rule-trailing", "rule-empty"],
)
def test_empty_field_path_is_refused(text: str, key: str, line: int) -> None:
    """A dotted field path with an empty part is refused where it is written, header or rule."""
    problems = problems_of(text)
    assert any(
        p.startswith(key) and "empty field path" in p and f"(line {line})" in p for p in problems
    ), problems


def test_strings_are_parsed_once_into_typed_values() -> None:
    """Addresses, networks, the rate and login_url are typed values; the fields stay as written."""
    extra = (
        "  unknown_session_limit: 30/minute\n"
        "login_url: /login?flow=web\n"
        "listen: '[::1]:8081'\n"
        "admin_listen: null\n"
        "trusted_proxies: [10.1.2.3/8, '::1']\n"
    )
    config = parse_config(BASE.replace("protect: [/dashboard]\n", extra), env={})
    assert config.listen_address == HostPort("::1", 8081)
    assert config.admin_address is None
    assert config.trusted_networks == (ip_network("10.0.0.0/8"), ip_network("::1/128"))
    assert config.auth.unknown_session_rate == Rate(30, 60.0)
    assert (config.login_path, config.login_query) == ("/login", "flow=web")
    assert config.trusted_networks is config.trusted_networks
    assert config.listen == "[::1]:8081"
    assert config.model_dump()["trusted_proxies"] == ["10.1.2.3/8", "::1"]


def test_defaults_are_parsed_too() -> None:
    """Keys left out get their default's parsed value: no limit, the default addresses."""
    config = parse_config(BASE, env={})
    assert config.listen_address == HostPort("0.0.0.0", 8080)
    assert config.admin_address == HostPort("127.0.0.1", 9901)
    assert config.auth.unknown_session_rate is None
    assert (config.trusted_networks, config.login_path, config.login_query) == ((), "/login", "")


def test_a_copy_with_changes_parses_them_again() -> None:
    """model_copy(update=...) gives the parsed values of the new fields, never stale ones."""
    config = parse_config(BASE, env={})
    copied = config.model_copy(update={"admin_listen": None, "login_url": "/in?x=1"})
    assert copied.admin_address is None
    assert (copied.login_path, copied.login_query) == ("/in", "x=1")
    assert config.admin_address == HostPort("127.0.0.1", 9901)


def _pem(key: Any, public: bool = False, password: bytes | None = None) -> bytes:
    if public:
        return bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """Key files of every kind a careless operator might list, by name."""
    p256 = ec.generate_private_key(ec.SECP256R1())
    files = {
        "good.pem": _pem(p256),
        "p384.pem": _pem(ec.generate_private_key(ec.SECP384R1())),
        "rsa.pem": _pem(rsa.generate_private_key(65537, 2048)),
        "ed25519.pem": _pem(ed25519.Ed25519PrivateKey.generate()),
        "public.pem": _pem(p256, public=True),
        "encrypted.pem": _pem(p256, password=b"hunter2"),
        "garbage.pem": b"not a key at all\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "a-directory.pem").mkdir()
    return tmp_path


def assertion_block(key_dir: Path, *key_names: str, extra: str = "") -> str:
    listed = "".join(f"    - {key_dir / name}\n" for name in key_names)
    return BASE + f"assertion:\n  keys:\n{listed}{extra}"


def test_assertion_defaults(key_dir: Path) -> None:
    """An assertion block with only keys gets the documented defaults."""
    config = parse_config(assertion_block(key_dir, "good.pem"), env={})
    assertion = config.assertion
    assert assertion is not None
    assert assertion.header == "X-Gateway-Assertion"
    assert assertion.issuer == "hamrah-gateway"
    assert assertion.audience is None
    assert assertion.ttl == 60
    assert assertion.claims == {"sub": "id", "email": "email"}
    assert len(assertion.keys[0].kid) == 43
    assert parse_config(BASE, env={}).assertion is None


@pytest.mark.parametrize(
    ("key_names", "key", "line", "says"),
    [
        (("absent.pem",), "assertion.keys[0]", 7, "cannot read"),
        (("good.pem", "a-directory.pem"), "assertion.keys[1]", 8, "cannot read"),
        (("/dev/zero",), "assertion.keys[0]", 7, "not a regular file"),
        (("p384.pem",), "assertion.keys[0]", 7, "EC key on secp384r1"),
        (("rsa.pem",), "assertion.keys[0]", 7, "type RSA"),
        (("ed25519.pem",), "assertion.keys[0]", 7, "type Ed25519"),
        (("public.pem",), "assertion.keys[0]", 7, "public key"),
        (("encrypted.pem",), "assertion.keys[0]", 7, "encrypted"),
        (("garbage.pem",), "assertion.keys[0]", 7, "not a PEM private key"),
        (("good.pem", "good.pem"), "assertion.keys", 6, "listed twice"),
        ((), "assertion.keys", 6, "at least 1"),
    ],
    ids=[
        "missing",
        "directory",
        "device",
        "p384",
        "rsa",
        "ed25519",
        "public",
        "encrypted",
        "garbage",
        "twice",
        "empty",
    ],
)
def test_unusable_key_names_key_and_line(
    key_dir: Path, key_names: tuple[str, ...], key: str, line: int, says: str
) -> None:
    """A key file that cannot sign ES256 is a config error naming the key, its line and why."""
    text = assertion_block(key_dir, *key_names)
    if not key_names:
        text = text.replace("  keys:\n", "  keys: []\n")
    problems = problems_of(text)
    assert any(p.startswith(f"{key}:") and f"(line {line})" in p and says in p for p in problems), (
        problems
    )


@pytest.mark.parametrize(
    ("extra", "key", "line"),
    [
        ("  ttl: 5\n", "assertion.ttl", 8),
        ("  ttl: 3601\n", "assertion.ttl", 8),
        ("  issuer: ''\n", "assertion.issuer", 8),
        ('  audience: "a\\nb"\n', "assertion.audience", 8),
        ("  header: 'X Bad'\n", "assertion.header", 8),
        ("  header: X-Auth-User-Id\n", "assertion.header", 8),
        ("  header: x_forwarded_for\n", "assertion.header", 8),
        ("  header: Cookie\n", "assertion.header", 8),
        ("  claims:\n    email: email\n", "assertion.claims", 8),
        ("  claims:\n    sub: id\n    exp: expires\n", "assertion.claims", 8),
        ("  claims:\n    sub: ''\n", "assertion.claims", 8),
        ("  colour: blue\n", "assertion.colour", 8),
    ],
    ids=[
        "ttl-low",
        "ttl-high",
        "issuer-empty",
        "audience-newline",
        "header-not-token",
        "header-identity",
        "header-forwarding",
        "header-cookie",
        "claims-no-sub",
        "claims-reserved",
        "claims-empty-field",
        "unknown",
    ],
)
def test_bad_assertion_setting_names_key_and_line(
    key_dir: Path, extra: str, key: str, line: int
) -> None:
    """A bad assertion setting is reported with its dotted key and YAML line."""
    text = assertion_block(key_dir, "good.pem", extra=extra)
    problems = problems_of(text)
    assert any(p.startswith(f"{key}:") and f"(line {line})" in p for p in problems), problems


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("header_timeout", "0"),
        ("idle_timeout", "-1"),
        ("body_timeout", "soon"),
        ("max_connections", "8"),
        ("max_connections_per_ip", "0"),
        ("max_body_bytes", "0"),
        ("overload_lag", "11"),
        ("max_conns", "5"),
    ],
)
def test_bad_limit_is_refused_with_key_and_line(key: str, value: str) -> None:
    """Each limits key refuses a bad value (or an unknown key) naming it and its line."""
    problems = problems_of(BASE + f"limits:\n  {key}: {value}\n")
    assert any(p.startswith(f"limits.{key}:") and "(line 6)" in p for p in problems), problems


def test_limits_have_production_defaults() -> None:
    """Left out, the limits are the documented defaults."""
    limits = parse_config(BASE, env={}).limits
    assert (limits.header_timeout, limits.idle_timeout, limits.body_timeout) == (10, 75, 60)
    assert (limits.max_connections, limits.max_connections_per_ip) == (10_000, 256)
    assert (limits.max_body_bytes, limits.overload_lag) == (None, 0.1)
