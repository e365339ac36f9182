"""The command line: --check, exit status 2 on a bad config, keygen, python -m and the console
script."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

GOOD_CONFIG = """\
upstream: http://127.0.0.1:9
auth:
  validate_url: http://127.0.0.1:9/api/auth/sessions/validate
protect: [/dashboard]
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_check_accepts_a_valid_config(tmp_path: Path) -> None:
    """--check validates the file and exits 0 without starting anything."""
    path = tmp_path / "gw.yaml"
    path.write_text(GOOD_CONFIG)
    result = run("--config", str(path), "--check")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_bad_config_exits_2_naming_each_problem(tmp_path: Path, check: bool) -> None:
    """A bad config exits 2 with one line per problem naming key and line; nothing starts."""
    path = tmp_path / "gw.yaml"
    path.write_text(GOOD_CONFIG + "colour: blue\nupstream_timeout: soon\n")
    result = run("--config", str(path), *(["--check"] if check else []))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("colour: unknown key (line 5)" in line for line in lines), result.stderr
    assert any("upstream_timeout:" in line and "(line 6)" in line for line in lines), result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist is a config error, not a traceback."""
    result = run("--config", str(tmp_path / "absent.yaml"), "--check")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    """`hamrah-gateway --help` is on the venv's PATH and lists the demo."""
    script = Path(sys.executable).parent / "hamrah-gateway"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_keygen_writes_a_p256_private_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    """keygen writes a PEM EC P-256 private key with mode 0600 and prints its kid."""
    path = tmp_path / "assertion-1.pem"
    result = run("keygen", str(path))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert ECKey.import_key(path.read_text()).thumbprint() in result.stdout


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    """keygen on an existing file exits 1, says so, and leaves the file as it was."""
    path = tmp_path / "assertion-1.pem"
    path.write_text("the key signing right now\n")
    result = run("keygen", str(path))
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert path.read_text() == "the key signing right now\n"
    assert "Traceback" not in result.stderr


def test_keygen_into_a_missing_directory_says_why(tmp_path: Path) -> None:
    """keygen where the directory does not exist exits 1 with the reason, not a traceback."""
    result = run("keygen", str(tmp_path / "absent" / "key.pem"))
    assert result.returncode == 1
    assert "No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr
