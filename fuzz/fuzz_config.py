"""Fuzz the config loader: any text gives a GatewayConfig or a ConfigError, never a crash.

Run: python fuzz/fuzz_config.py -atheris_runs=20000   or   -max_total_time=30
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["gateway"]):
    from gateway.config import ConfigError, parse_config

SEED = """\
listen: 0.0.0.0:8080
upstream: http://frontend:3000
upstream_timeout: 30.0
auth:
  validate_url: http://api:8787/api/auth/sessions/validate
  cookie: session
  cache_ttl: 300
  identity_headers:
    X-Auth-User-Id: id
protect: [/dashboard, /settings]
public: [/dashboard/public]
login_url: /login
trusted_proxies: [10.0.0.0/8]
log:
  level: info
"""
_ENV = {"UP": "http://x:1", "EMPTY": ""}


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        text = fdp.ConsumeUnicodeNoSurrogates(4096)
    else:
        # Mutate the seed line by line so most inputs are nearly valid YAML configs.
        lines = SEED.splitlines()
        index = fdp.ConsumeIntInRange(0, len(lines) - 1)
        replacement = fdp.ConsumeUnicodeNoSurrogates(80)
        lines[index] = replacement if mode == 1 else lines[index] + replacement
        text = "\n".join(lines)
    try:
        config = parse_config(text, "<fuzz>", _ENV)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError must name at least one problem"
        for problem in exc.problems:
            assert problem and "\n" not in problem, problem
        return
    # A config that loads must be usable: its derived values parse.
    assert config.listen_address.port >= 0
    _ = config.trusted_networks


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
