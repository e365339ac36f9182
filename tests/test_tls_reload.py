"""Certificate reload (gateway/tls.py): by file replacement and by SIGHUP, without closing what is
open; a pair that does not load is refused with the old one kept; the expiry metric."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.support.certs import (
    PairFiles,
    client_context,
    expired_window,
    future_window,
    served_serial,
    tls_keys,
    write_pair,
)
from tests.support.harness import (
    Backend,
    GatewayFactory,
    LogBuffer,
    eventually,
    eventually_async,
)
from tests.support.process import free_port
from tests.test_service import serving

# The frontend's event stream: this many ticks this far apart keep a download going across the
# reload (2 s in all).
TICKS, GAP = 8, 0.25
WORKERS = 2
# Enough new connections that the kernel's spreading reaches both workers (1 in 2**19 it does not).
HANDSHAKES = 20


@contextlib.asynccontextmanager
async def open_work(
    port: int, ca: trustme.CA
) -> AsyncIterator[tuple[aiohttp.ClientResponse, aiohttp.ClientWebSocketResponse]]:
    """A slow download and a WebSocket, each on a TLS connection made before the reload."""
    base = f"https://localhost:{port}"
    context = client_context(ca)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/events?count={TICKS}&gap={GAP}", ssl=context) as download,
        session.ws_connect(f"{base}/ws", ssl=context) as ws,
    ):
        assert (await download.content.readline()).startswith(b"data: tick 0")
        assert (await ws.receive(timeout=5)).data == "hello anonymous"
        yield download, ws


async def assert_still_going(
    download: aiohttp.ClientResponse, ws: aiohttp.ClientWebSocketResponse
) -> None:
    """The download finishes whole and the WebSocket still echoes."""
    rest = await download.content.read()
    assert rest.count(b"data: tick") == TICKS - 1
    await ws.send_str("after")
    assert (await ws.receive(timeout=5)).data == "echo:after"


def replace_by_rename(new: PairFiles, live: PairFiles) -> None:
    """What certbot and cert-manager do: new files renamed over the old names."""
    os.replace(new.cert_file, live.cert_file)
    os.replace(new.key_file, live.key_file)


async def serves(port: int, ca: trustme.CA, serial: int) -> None:
    """Wait until a new handshake is served the certificate with this serial."""
    context = client_context(ca)

    async def check() -> bool:
        return (await served_serial(port, context))[0] == serial

    await eventually_async(check)


async def test_replaced_files_are_served_to_new_handshakes_while_open_work_goes_on(
    gateway_factory: GatewayFactory, ca: trustme.CA, pair: PairFiles, tmp_path: Path
) -> None:
    """watch: a pair renamed over the files reaches new handshakes; a download and a WebSocket
    on connections made before keep going."""
    gw = await gateway_factory(tls=tls_keys(pair, watch=True))
    async with open_work(gw.port, ca) as (download, ws):
        new = write_pair(ca, tmp_path / "new", "site")
        replace_by_rename(new, pair)
        await serves(gw.port, ca, new.serial)
        await assert_still_going(download, ws)


async def test_swapped_symlink_is_followed(
    gateway_factory: GatewayFactory, ca: trustme.CA, tmp_path: Path
) -> None:
    """cert-manager's layout: the files are symlinks through a directory link that is swapped."""
    first = write_pair(ca, tmp_path / "v1", "site")
    second = write_pair(ca, tmp_path / "v2", "site")
    (tmp_path / "data").symlink_to(tmp_path / "v1")
    for name in ("site.pem", "site.key"):
        (tmp_path / name).symlink_to(tmp_path / "data" / name)
    linked = PairFiles(tmp_path / "site.pem", tmp_path / "site.key", first.serial, first.not_after)
    gw = await gateway_factory(tls=tls_keys(linked, watch=True))
    (tmp_path / "data.new").symlink_to(tmp_path / "v2")
    os.replace(tmp_path / "data.new", tmp_path / "data")
    await serves(gw.port, ca, second.serial)


async def test_sighup_reloads_the_pair_while_open_work_goes_on(
    tmp_path: Path, frontend: Backend, auth_api: Backend, ca: trustme.CA, pair: PairFiles
) -> None:
    """A real process: SIGHUP loads the rewritten pair for new handshakes only."""
    tls = tls_keys(pair, watch=False)
    async with serving(tmp_path, frontend, auth_api, tls=tls) as (process, port):
        assert (await served_serial(port, client_context(ca)))[0] == pair.serial
        async with open_work(port, ca) as (download, ws):
            new = write_pair(ca, tmp_path / "live", "site")
            process.signal(signal.SIGHUP)
            await process.wait_for_output(f"{new.serial:x}")
            await serves(port, ca, new.serial)
            await assert_still_going(download, ws)


async def test_with_workers_every_worker_reloads_on_sighup(
    tmp_path: Path, frontend: Backend, auth_api: Backend, ca: trustme.CA, pair: PairFiles
) -> None:
    """workers: 2: after SIGHUP to the supervisor, every new handshake (whichever worker the
    kernel hands it to) gets the new certificate, and /readyz names the tls check."""
    admin = free_port()
    overrides: dict[str, object] = {
        "tls": tls_keys(pair, watch=False),
        "workers": WORKERS,
        "admin_listen": f"127.0.0.1:{admin}",
    }
    async with serving(tmp_path, frontend, auth_api, **overrides) as (process, port):
        await process.wait_for_output('"supervisor started"')
        new = write_pair(ca, tmp_path / "live", "site")
        process.signal(signal.SIGHUP)
        await eventually(lambda: process.output.count(f"{new.serial:x}") >= WORKERS + 1)
        context = client_context(ca)
        serials = {(await served_serial(port, context))[0] for _ in range(HANDSHAKES)}
        assert serials == {new.serial}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{admin}/readyz") as response,
        ):
            assert (await response.json())["checks"]["tls"] == "ok"


def mismatched(ca: trustme.CA, directory: Path, live: PairFiles) -> str:
    """A new certificate with the old key: the key does not match."""
    shutil.copy(write_pair(ca, directory, "other").cert_file, live.cert_file)
    return "does not match the certificate"


def expired(ca: trustme.CA, directory: Path, live: PairFiles) -> str:
    begin, end = expired_window()
    replace_by_rename(write_pair(ca, directory, "old", not_before=begin, not_after=end), live)
    return "expired on"


def not_yet_valid(ca: trustme.CA, directory: Path, live: PairFiles) -> str:
    begin, end = future_window()
    replace_by_rename(write_pair(ca, directory, "soon", not_before=begin, not_after=end), live)
    return "not valid until"


def unreadable(ca: trustme.CA, directory: Path, live: PairFiles) -> str:
    # Permission bits do not stop root (the tests' user in CI); a directory cannot be read as one.
    live.key_file.unlink()
    live.key_file.mkdir()
    return "cannot read"


def not_pem(ca: trustme.CA, directory: Path, live: PairFiles) -> str:
    live.cert_file.write_text("-----BEGIN NONSENSE-----\n")
    return "not a PEM certificate"


@pytest.mark.parametrize("breakage", [mismatched, expired, not_yet_valid, unreadable, not_pem])
async def test_a_pair_that_does_not_load_is_refused_and_the_old_one_kept(
    gateway_factory: GatewayFactory,
    ca: trustme.CA,
    pair: PairFiles,
    tmp_path: Path,
    log_output: LogBuffer,
    breakage: Callable[[trustme.CA, Path, PairFiles], str],
) -> None:
    """One error line naming the file and why; handshakes keep the old certificate; /readyz
    stays 200 naming the problem; the expiry metric stays the old certificate's."""
    gw = await gateway_factory(tls=tls_keys(pair, watch=False), admin_listen="127.0.0.1:0")
    why = breakage(ca, tmp_path / "broken", pair)
    certificates = gw.running.certificates
    assert certificates is not None
    assert certificates.reload() is False
    refusals = [line for line in log_output.getvalue().splitlines() if "refused" in line]
    assert len(refusals) == 1 and why in refusals[0] and str(pair.cert_file.parent) in refusals[0]
    assert (await served_serial(gw.port, client_context(ca)))[0] == pair.serial
    admin = f"http://127.0.0.1:{gw.running.admin_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{admin}/readyz") as response:
            assert response.status == 200
            ready = await response.json()
        async with session.get(f"{admin}/metrics") as response:
            metrics = await response.text()
    assert ready["status"] == "degraded"
    assert ready["checks"]["tls"].startswith("degraded: ") and why in ready["checks"]["tls"]
    assert expiry_of(metrics) == pair.not_after.timestamp()


def expiry_of(metrics: str) -> float:
    """The value of the expiry gauge in a Prometheus exposition."""
    name = "hamrah_gateway_tls_cert_expiry_seconds "
    return float(next(line for line in metrics.splitlines() if line.startswith(name)).split()[1])
