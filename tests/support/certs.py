"""Certificates made in the test: a private CA (trustme), pairs written to files, and TLS clients
that trust that CA and report which certificate a handshake was served."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme
from cryptography import x509

HOSTS = ("localhost", "127.0.0.1")


@dataclass
class PairFiles:
    """A certificate chain and its key on disk, and the leaf's serial and expiry."""

    cert_file: Path
    key_file: Path
    serial: int
    not_after: datetime


def write_pair(
    ca: trustme.CA,
    directory: Path,
    name: str,
    *hosts: str,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> PairFiles:
    """Issue a leaf for `hosts` (default localhost and 127.0.0.1) and write it as name.pem/.key."""
    leaf = ca.issue_cert(*(hosts or HOSTS), not_before=not_before, not_after=not_after)
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_file.write_bytes(leaf.private_key_pem.bytes())
    parsed = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    return PairFiles(cert_file, key_file, parsed.serial_number, parsed.not_valid_after_utc)


def expired_window() -> tuple[datetime, datetime]:
    """A validity window that ended yesterday."""
    now = datetime.now(UTC)
    return now - timedelta(days=30), now - timedelta(days=1)


def future_window() -> tuple[datetime, datetime]:
    """A validity window that starts tomorrow."""
    now = datetime.now(UTC)
    return now + timedelta(days=1), now + timedelta(days=30)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context trusting only the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def served_serial(
    port: int, context: ssl.SSLContext, host: str = "127.0.0.1"
) -> tuple[int, str | None, str]:
    """Handshake once: the serial of the certificate served, the ALPN protocol and TLS version."""
    _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname="localhost")
    try:
        tls: ssl.SSLObject = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        serial = x509.load_der_x509_certificate(der).serial_number
        return serial, tls.selected_alpn_protocol(), str(tls.version())
    finally:
        writer.close()


def tls_keys(pair: PairFiles, watch: bool, **extra: object) -> dict[str, object]:
    """The tls: keys of a gateway config serving `pair`."""
    return {
        "cert_file": str(pair.cert_file),
        "key_file": str(pair.key_file),
        "watch": watch,
        **extra,
    }
