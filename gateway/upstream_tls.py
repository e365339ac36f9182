"""TLS to the backends (`upstream_tls:`): the app, routes and the auth API over https.

Certificates and host names are always verified (Python's defaults: CERT_REQUIRED and
check_hostname, TLS 1.2 at least), against the system's trust store or `ca_file`; there is no
switch to turn that off. A client certificate (mutual TLS) is read again on SIGHUP: loaded aside
first, and into the live context only once it loads, so a broken renewal keeps the old one.
"""

from __future__ import annotations

import ssl

import structlog

from gateway.tls import PairRefused, load_chain
from gateway.tls_config import UpstreamTlsConfig

log = structlog.get_logger("gateway.upstream_tls")


def client_context(config: UpstreamTlsConfig | None) -> ssl.SSLContext:
    """A verifying client context for one upstream_tls setting; PairRefused naming the file."""
    ca_file = None if config is None else config.ca_file
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:
        raise PairRefused(str(ca_file), f"not a PEM CA bundle ({exc.reason})") from None
    except OSError as exc:
        raise PairRefused(str(ca_file), f"cannot read: {exc.strerror}") from None
    if config is not None and config.client_cert is not None:
        load_chain(context, config.client_cert, config.client_key)
    return context


class ClientTls:
    """The context the gateway connects to https upstreams with, for one upstream_tls setting."""

    def __init__(self, config: UpstreamTlsConfig | None) -> None:
        self.config = config
        self.server_name = None if config is None else config.server_name
        self.context = client_context(config)

    def reload(self) -> None:
        """Read the client certificate again (a renewed one); the old one stays on failure."""
        config = self.config
        if config is None or config.client_cert is None:
            return
        try:
            client_context(config)
        except PairRefused as exc:
            log.error(
                "upstream client certificate refused; the previous one stays",
                file=exc.file,
                reason=exc.reason,
            )
            return
        load_chain(self.context, config.client_cert, config.client_key)
        log.info("upstream client certificate reloaded", file=config.client_cert)


def verify_failure(exc: BaseException) -> str | None:
    """Why a TLS connection to an upstream failed, in OpenSSL's words; None if it was not TLS."""
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return str(cause.verify_message)
    if isinstance(cause, ssl.SSLError):
        return str(cause.reason or cause)
    return None
