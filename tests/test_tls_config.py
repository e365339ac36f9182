"""The tls: and upstream_tls: keys (gateway/tls_config.py): typed values, and every mistake a
config error naming the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from gateway.config import ConfigError, HostPort, parse_config
from tests.support.certs import write_pair

BASE = """\
listen: 0.0.0.0:8443
upstream: https://frontend:3000
auth:
  validate_url: http://api:8787/api/auth/sessions/validate
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    pair = write_pair(trustme.CA(), tmp_path, "site")
    return {"CERT": str(pair.cert_file), "KEY": str(pair.key_file), "DIR": str(tmp_path)}


def problems_of(text: str, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + text, "gw.yaml", env)
    return list(caught.value.problems)


def test_tls_keys_get_their_defaults(files: dict[str, str]) -> None:
    """Only the pair given: TLS 1.2 and up, watched, HSTS for a year, no redirect listener."""
    config = parse_config(BASE + "tls:\n  cert_file: ${CERT}\n  key_file: ${KEY}\n", env=files)
    assert config.tls is not None
    assert (config.tls.min_version, config.tls.watch, config.tls.hsts) == ("1.2", True, 31536000)
    assert config.tls.hsts_header == "max-age=31536000"
    assert config.redirect_address is None


def test_redirect_listener_is_parsed(files: dict[str, str]) -> None:
    """redirect_http becomes a typed address; min_version may be written as a number."""
    text = "tls:\n  cert_file: ${CERT}\n  key_file: ${KEY}\n  min_version: 1.3\n"
    config = parse_config(BASE + text + "  redirect_http: 0.0.0.0:8080\n", env=files)
    assert config.redirect_address == HostPort("0.0.0.0", 8080)
    assert config.tls is not None and config.tls.min_version == "1.3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tls:\n  cert_file: ${DIR}/missing.pem\n  key_file: ${KEY}\n",
            "tls.cert_file: no such file",
        ),
        ("tls:\n  key_file: ${KEY}\n", "tls.cert_file: required key is missing"),
        (
            'tls:\n  cert_file: ${CERT}\n  key_file: ${KEY}\n  min_version: "1.0"\n',
            'tls.min_version: must be "1.2" or "1.3"',
        ),
        (
            "tls:\n  cert_file: ${CERT}\n  key_file: ${KEY}\n  min_version: 1.1\n",
            'tls.min_version: must be "1.2" or "1.3"',
        ),
        (
            "tls:\n  cert_file: ${CERT}\n  key_file: ${KEY}\n  redirect_http: 127.0.0.1:8443\n",
            "tls.redirect_http: 127.0.0.1:8443 takes the port of listen",
        ),
        (
            "tls:\n  cert_file: ${CERT}\n  key_file: ${KEY}\n  redirect_http: nonsense\n",
            "tls.redirect_http: expected host:port",
        ),
        ("tls:\n  cert_file: ${CERT}\n  key_file: ${KEY}\n  hsts: -1\n", "tls.hsts:"),
        ("tls:\n  cert_file: ${CERT}\n  key_file: ${KEY}\n  insecure: true\n", "tls.insecure"),
        ("upstream_tls:\n  client_key: ${KEY}\n", "upstream_tls: client_key needs client_cert"),
        ("upstream_tls:\n  ca_file: ${DIR}/none.pem\n", "upstream_tls.ca_file: no such file"),
        ("upstream_tls:\n  verify: false\n", "upstream_tls.verify: unknown key"),
        (
            "routes:\n  - prefix: /api\n    upstream: https://api:1\n    upstream_tls:\n"
            "      client_key: ${KEY}\n",
            "routes[0].upstream_tls: client_key needs client_cert",
        ),
    ],
    ids=[
        "missing-file",
        "key-without-cert",
        "tls-1.0",
        "tls-1.1-as-number",
        "redirect-equals-listen",
        "redirect-not-an-address",
        "negative-hsts",
        "unknown-key",
        "client-key-without-cert",
        "missing-ca",
        "no-insecure-switch",
        "route-client-key-without-cert",
    ],
)
def test_tls_mistakes_are_config_errors_with_key_and_line(
    files: dict[str, str], text: str, expected: str
) -> None:
    """Each mistake is one problem naming its key and a line inside the tls section."""
    problems = problems_of(text, files)
    assert any(p.startswith(expected) and "(line " in p for p in problems), problems
