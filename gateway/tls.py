"""TLS at the edge: the listener's context, its certificate pair, and reloading that pair.

A reload builds a whole new context and checks it (both files read, the key matches, the leaf
certificate valid now) before anything changes; only then do new handshakes get it, through the
listener context's SNI callback, which OpenSSL runs on every ClientHello (with or without a server
name). A connection that has finished its handshake keeps the certificate it was served, so
nothing open is closed; a pair that does not load leaves the previous one serving, and says why.
Loading into the live context instead would not be safe: OpenSSL drops the old key the moment a
certificate that does not match it is loaded, before the new key has been read.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from cryptography import x509

from gateway.metrics import Metrics
from gateway.tls_config import TlsConfig

log = structlog.get_logger("gateway.tls")

# How often watched files are looked at. certbot and cert-manager renew days before expiry, so a
# second is plenty, and a stat() of two files a second costs nothing measurable.
WATCH_SECONDS = 1.0
# Mozilla's "intermediate" TLS 1.2 suites (forward secret AEAD only); TLS 1.3 has its own, all
# of which are fine. The DHE suites of the profile are left out: they need DH parameters.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
ALPN = ["http/1.1"]
# A file's identity and content as stat() sees it: a rename or symlink swap changes the inode.
Signature = tuple[tuple[int, int, int, int] | None, ...]


class PairRefused(Exception):
    """A certificate pair that cannot serve: the file at fault, and why."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class EncryptedKey(Exception):
    """The key has a passphrase: OpenSSL would otherwise ask for it on the terminal and wait."""


@dataclass(frozen=True, slots=True)
class Pair:
    """A loaded certificate pair, ready for handshakes."""

    context: ssl.SSLContext
    serial: int
    not_after: datetime


def server_context(min_version: str) -> ssl.SSLContext:
    """A server context with the gateway's settings and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[min_version]
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.set_alpn_protocols(ALPN)
    # Mozilla's profile lets the client pick among these (all are strong; a phone without AES
    # hardware prefers ChaCha20). Session tickets stay on (Python's default): resumed handshakes.
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _no_passphrase() -> bytes:
    raise EncryptedKey


def _leaf(cert_file: str, now: datetime) -> x509.Certificate:
    """The first certificate in the file, if it is valid at `now`."""
    try:
        pem = Path(cert_file).read_bytes()
        leaf = x509.load_pem_x509_certificate(pem)
    except OSError as exc:
        raise PairRefused(cert_file, f"cannot read: {exc.strerror}") from None
    except ValueError:
        raise PairRefused(cert_file, "not a PEM certificate") from None
    if leaf.not_valid_after_utc <= now:
        raise PairRefused(cert_file, f"expired on {leaf.not_valid_after_utc.isoformat()}")
    if leaf.not_valid_before_utc > now:
        raise PairRefused(cert_file, f"not valid until {leaf.not_valid_before_utc.isoformat()}")
    return leaf


def load_chain(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    """Load a certificate chain and its key into `context`; PairRefused naming the file and why
    (a key without a file of its own is read from the certificate's file)."""
    key = key_file or cert_file
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except EncryptedKey:
        raise PairRefused(key, "the key has a passphrase; give it without") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise PairRefused(key, "does not match the certificate") from None
        raise PairRefused(key, f"not a usable PEM certificate and key ({exc.reason})") from None
    except OSError as exc:
        raise PairRefused(key, f"cannot read: {exc.strerror}") from None


def load_pair(config: TlsConfig, now: datetime | None = None) -> Pair:
    """A new context serving the configured pair; PairRefused naming the file and why."""
    leaf = _leaf(config.cert_file, now or datetime.now(UTC))
    context = server_context(config.min_version)
    load_chain(context, config.cert_file, config.key_file)
    return Pair(context, leaf.serial_number, leaf.not_valid_after_utc)


def signature(config: TlsConfig) -> Signature:
    """What a change to either file changes (None for a file that cannot be looked at now)."""
    found: list[tuple[int, int, int, int] | None] = []
    for path in (config.cert_file, config.key_file):
        try:
            st = os.stat(path)
        except OSError:
            found.append(None)
            continue
        found.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(found)


class ServerCertificates:
    """The certificate new handshakes get, swapped whole on reload; the last problem, if any."""

    def __init__(self, config: TlsConfig, metrics: Metrics) -> None:
        self.config = config
        self._metrics = metrics
        self._attempted = signature(config)
        self.pair = load_pair(config)
        self.problem: str | None = None
        # The context the listener is made with: its callback hands each new handshake the
        # context of the pair loaded last.
        self.listener_context = self.pair.context
        self.listener_context.sni_callback = self._pick
        self._loaded(self.pair)

    def _pick(self, connection: ssl.SSLObject, _name: str | None, ctx: ssl.SSLContext) -> None:
        if self.pair.context is not ctx:
            connection.context = self.pair.context

    def _loaded(self, pair: Pair) -> None:
        self._metrics.tls_expiry.set(pair.not_after.timestamp())
        log.info(
            "tls certificate loaded",
            file=self.config.cert_file,
            serial=f"{pair.serial:x}",
            not_after=pair.not_after.isoformat(),
        )

    def reload(self, config: TlsConfig | None = None) -> bool:
        """Load the pair again (from `config`'s files when given); keep the old one on failure."""
        if config is not None:
            self.config = config
        self._attempted = signature(self.config)
        try:
            pair = load_pair(self.config)
        except PairRefused as exc:
            self.problem = (
                f"{exc}; still serving serial {self.pair.serial:x},"
                f" valid until {self.pair.not_after.isoformat()}"
            )
            log.error(
                "tls certificate refused; the previous one stays", file=exc.file, reason=exc.reason
            )
            return False
        self.pair, self.problem = pair, None
        self._loaded(pair)
        return True

    def check(self) -> str:
        """The readiness check's value: a refused reload degrades, it does not fail."""
        return "ok" if self.problem is None else f"degraded: {self.problem}"

    async def watch(self, interval: float = WATCH_SECONDS) -> None:
        """Reload when either file changes (certbot and cert-manager rename files or swap
        symlinks): once two looks in a row agree, so a pair caught half-replaced is not tried."""
        last = signature(self.config)
        while True:
            await asyncio.sleep(interval)
            now = signature(self.config)
            if now == last and now != self._attempted:
                self.reload()
            last = now
