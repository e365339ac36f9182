"""`hamrah-gateway tls-selfsigned` (gateway/selfsigned.py): a local CA and a certificate the
gateway serves and a client trusting the CA verifies; kept across restarts."""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.cli import main
from tests.support.certs import served_serial
from tests.support.harness import GatewayFactory


async def test_made_certificate_is_served_and_verified(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """The gateway serves the made pair; a client trusting only ca.pem verifies it."""
    assert main(["tls-selfsigned", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "privkey.pem").stat().st_mode & 0o077 == 0
    tls = {
        "cert_file": str(tmp_path / "fullchain.pem"),
        "key_file": str(tmp_path / "privkey.pem"),
        "watch": False,
    }
    gw = await gateway_factory(tls=tls)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    serial, _, _ = await served_serial(gw.port, context, host="127.0.0.1")
    assert serial > 0


def test_existing_files_are_kept(tmp_path: Path) -> None:
    """A second run (a restart) keeps the certificate it made the first time."""
    assert main(["tls-selfsigned", "--dir", str(tmp_path)]) == 0
    first = (tmp_path / "fullchain.pem").read_bytes()
    assert main(["tls-selfsigned", "--dir", str(tmp_path), "--host", "other.test"]) == 0
    assert (tmp_path / "fullchain.pem").read_bytes() == first
