"""Config loading: typed values, ${VAR} substitution, and every problem named with key and line."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

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
