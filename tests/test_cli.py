"""The command line: --check, exit status 2 on a bad config, python -m and the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
