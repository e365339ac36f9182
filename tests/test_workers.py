"""`workers: 2` as real processes: a supervisor, two workers on one port, real signals.

Every request in a batch goes over a fresh connection, so the kernel's SO_REUSEPORT hashing spreads
them over both workers; each worker's own request count (its prometheus multiprocess file) shows
that both were hit, so "all 40 answered X" means "both workers answer X".
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import multiprocess

from tests.support.backends import GOOD_USER
from tests.support.harness import GOOD, Backend, config_text
from tests.support.process import GatewayProcess, free_port, wait_for_port

WORKERS = 2
BATCH = 40
ADMIN_TOKEN = "workers-test-admin-token"
DEADLINE = 15.0
BROWSER = {"Accept": "text/html"}


# -- helpers shared with test_scale.py ------------------------------------------------------------


def gateway_yaml(
    frontend: Backend, auth_api: Backend, port: int, admin_port: int | None, **overrides: Any
) -> str:
    """A config listening on fixed loopback ports, JSON logs at info."""
    data = yaml.safe_load(config_text(frontend, auth_api, **overrides))
    data["listen"] = f"127.0.0.1:{port}"
    data["admin_listen"] = None if admin_port is None else f"127.0.0.1:{admin_port}"
    data.setdefault("log", {"level": "info", "format": "json"})
    return yaml.safe_dump(data)


def fresh_client() -> aiohttp.ClientSession:
    """A client that opens a new connection per request, keeps no cookies, follows nothing."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def get_status(
    client: aiohttp.ClientSession, port: int, path: str, cookie: str | None = None
) -> int:
    headers = dict(BROWSER, **({"Cookie": f"session={cookie}"} if cookie else {}))
    async with client.get(
        f"http://127.0.0.1:{port}{path}",
        headers=headers,
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=10),
    ) as response:
        await response.read()
        return response.status


async def statuses(port: int, path: str, count: int, cookie: str | None = None) -> list[int]:
    """`count` requests in a row, each on a fresh connection."""
    async with fresh_client() as client:
        return [await get_status(client, port, path, cookie) for _ in range(count)]


async def poll(
    check: Callable[[], Awaitable[bool]], deadline: float = DEADLINE, what: str = "condition"
) -> None:
    """Await `check()` until it is true; fail after the deadline."""
    try:
        async with asyncio.timeout(deadline):
            while not await check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {deadline}s") from None


async def admin_json(
    port: int, path: str, method: str = "GET", **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with (
        fresh_client() as client,
        client.request(
            method,
            f"http://127.0.0.1:{port}{path}",
            timeout=aiohttp.ClientTimeout(total=10),
            **kwargs,
        ) as response,
    ):
        body: dict[str, Any] = await response.json(content_type=None)
        return response.status, body


async def revoke(admin_port: int, token: str | None, **body: str) -> tuple[int, dict[str, Any]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await admin_json(
        admin_port, "/sessions/revoke", method="POST", json=body, headers=headers
    )


def calls_for(auth_api: Backend, token: str) -> int:
    """Validation calls the auth API received for one session value."""
    needle = f"session={token}"
    return sum(
        1
        for call in auth_api.state.calls
        if any(name.lower() == "cookie" and needle in value for name, value in call["headers"])
    )


def count_lines(output: str, text: str) -> int:
    return sum(1 for line in output.splitlines() if text in line)


def pid_gone(pid: int) -> bool:
    """True once the process has exited (gone, or a zombie nobody has reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return re.search(r"^State:\s+Z", status, re.MULTILINE) is not None


# -- the supervisor -----------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """Live child processes of `pid`."""
    found: set[int] = set()
    for children_file in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in children_file.read_text().split())
        except OSError:
            continue
    return {child for child in found if not pid_gone(child)}


def metrics_dir(pid: int) -> Path:
    """Where a worker writes its prometheus multiprocess files (from its environment)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        name, _, value = entry.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return Path(value.decode())
    raise AssertionError(f"process {pid} has no PROMETHEUS_MULTIPROC_DIR")


def served_by(directory: Path, pid: int) -> float:
    """Requests one worker has answered: gateway_requests_total in its own counter file."""
    path = directory / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    merged = multiprocess.MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
        [str(path)], accumulate=True
    )
    return float(
        sum(
            sample.value
            for metric in merged
            for sample in metric.samples
            if sample.name == "gateway_requests_total"
        )
    )


def requests_total(exposition: str) -> float:
    """Sum of gateway_requests_total over every label set of a /metrics text."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("gateway_requests_total{")
    )


def write_supervised_config(
    path: Path, frontend: Backend, auth_api: Backend, port: int, admin_port: int, **overrides: Any
) -> None:
    overrides = {"shutdown_grace": 5, "auth": {"cache_ttl": 300}, **overrides}
    path.write_text(
        gateway_yaml(
            frontend,
            auth_api,
            port,
            admin_port,
            workers=WORKERS,
            admin_token=ADMIN_TOKEN,
            **overrides,
        )
    )


@dataclass
class Supervised:
    """A `workers: 2` gateway: the supervising process and its ports."""

    process: GatewayProcess
    port: int
    admin_port: int
    config_path: Path
    frontend: Backend
    auth_api: Backend

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    @property
    def output(self) -> str:
        return self.process.output

    def workers(self) -> set[int]:
        return children(self.pid)

    def write_config(self, **overrides: Any) -> None:
        write_supervised_config(
            self.config_path, self.frontend, self.auth_api, self.port, self.admin_port, **overrides
        )

    async def wait_for_lines(self, text: str, count: int, deadline: float = DEADLINE) -> None:
        async def enough() -> bool:
            if self.process.proc.poll() is not None:
                raise AssertionError(f"the supervisor exited early:\n{self.output}")
            return count_lines(self.output, text) >= count

        await poll(enough, deadline, f"{count} log lines with {text!r}")

    async def wait_for_served(self, total: float) -> None:
        """Wait until the live workers have counted `total` requests together."""

        async def counted() -> bool:
            return sum((await self.served()).values()) >= total

        await poll(counted, what=f"{total} requests counted")
        assert sum((await self.served()).values()) == total

    async def served(self) -> dict[int, float]:
        """Requests answered so far by each live worker."""
        directory = metrics_dir(next(iter(self.workers())))
        return {pid: served_by(directory, pid) for pid in self.workers()}


@pytest.fixture
async def supervised(
    tmp_path: Path, frontend: Backend, auth_api: Backend
) -> AsyncIterator[Supervised]:
    """A running `workers: 2` gateway with an admin token; stopped (and its workers) at the end."""
    port, admin_port = free_port(), free_port()
    config_path = tmp_path / "gateway.yaml"
    write_supervised_config(config_path, frontend, auth_api, port, admin_port)
    process = GatewayProcess(config_path, tmp_path / "out.log")
    gateway = Supervised(process, port, admin_port, config_path, frontend, auth_api)
    seen: set[int] = set()
    try:
        await gateway.wait_for_lines('"supervisor started"', 1)
        await gateway.wait_for_lines('"gateway started"', WORKERS)
        await wait_for_port(port)
        await wait_for_port(admin_port)
        seen |= gateway.workers()
        assert len(seen) == WORKERS, f"expected {WORKERS} workers, found {sorted(seen)}"
        yield gateway
    finally:
        seen |= gateway.workers() if not pid_gone(gateway.pid) else set()
        if gateway.process.proc.poll() is None:
            gateway.process.signal(signal.SIGTERM)
            try:
                await gateway.process.wait_exit()
            except TimeoutError:
                gateway.process.kill()
        gateway.process.kill()
        for pid in seen:  # never leave a worker behind, whatever the test did
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)


# -- the tests ----------------------------------------------------------------------------------


async def test_both_workers_serve(supervised: Supervised) -> None:
    """Two workers start under one supervisor and both answer requests on the shared port."""
    assert count_lines(supervised.output, '"gateway started"') == WORKERS
    assert await statuses(supervised.port, "/", BATCH) == [200] * BATCH
    # A request is counted just after its answer is sent: wait for the last one.
    await supervised.wait_for_served(BATCH)
    served = await supervised.served()
    assert len(served) == WORKERS
    assert all(count > 0 for count in served.values()), served


async def test_sighup_reaches_every_worker(supervised: Supervised) -> None:
    """SIGHUP to the supervisor: a newly protected path is protected in every worker."""
    assert await statuses(supervised.port, "/reports", 4) == [200] * 4
    supervised.write_config(protect=["/dashboard", "/reports"])
    await supervised.wait_for_served(4)
    before = await supervised.served()
    supervised.process.signal(signal.SIGHUP)
    await supervised.wait_for_lines('"reload passed to workers"', 1)
    await supervised.wait_for_lines('"config reloaded"', WORKERS)
    assert await statuses(supervised.port, "/reports", BATCH) == [302] * BATCH
    await supervised.wait_for_served(4 + BATCH)
    after = await supervised.served()
    assert all(after[pid] > before.get(pid, 0) for pid in after), (before, after)
    assert await statuses(supervised.port, "/reports", 4, GOOD) == [200] * 4


async def test_bad_reload_is_refused_by_the_supervisor(supervised: Supervised) -> None:
    """A SIGHUP with an invalid file is refused by the supervisor; no worker reloads."""
    supervised.config_path.write_text("upstream: [broken\n")
    supervised.process.signal(signal.SIGHUP)
    await supervised.wait_for_lines("reload refused", 1)
    before = await supervised.served()
    assert await statuses(supervised.port, "/dashboard", BATCH) == [302] * BATCH
    assert await statuses(supervised.port, "/reports", BATCH, GOOD) == [200] * BATCH
    await supervised.wait_for_served(2 * BATCH)
    after = await supervised.served()
    assert all(after[pid] > before.get(pid, 0) for pid in after), (before, after)
    # Both workers answered after the SIGHUP: had it reached them, each would have logged.
    assert count_lines(supervised.output, "reload refused") == 1
    assert count_lines(supervised.output, '"config reloaded"') == 0
    assert count_lines(supervised.output, '"reload passed to workers"') == 0


async def test_sigterm_drains_and_every_process_exits_0(
    supervised: Supervised, frontend: Backend
) -> None:
    """SIGTERM: a slow request in flight finishes, the workers and the supervisor exit 0."""
    workers = supervised.workers()
    async with fresh_client() as client:
        slow = asyncio.ensure_future(get_status(client, supervised.port, "/slow?delay=1"))

        async def slow_seen() -> bool:
            return any(e["raw_path"].startswith("/slow") for e in frontend.state.seen)

        await poll(slow_seen, what="the slow request reaching the frontend")
        supervised.process.signal(signal.SIGTERM)
        assert await slow == 200
    assert await supervised.process.wait_exit() == 0
    assert all(pid_gone(pid) for pid in workers)
    assert count_lines(supervised.output, '"stopped"') == WORKERS
    assert count_lines(supervised.output, '"supervisor stopped"') == 1
    assert "worker died" not in supervised.output
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", supervised.port)


async def test_killed_worker_is_restarted_and_the_port_keeps_serving(
    supervised: Supervised,
) -> None:
    """SIGKILL to one worker: the other keeps serving, the supervisor logs and restarts it."""
    workers = supervised.workers()
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)

    async def victim_gone() -> bool:
        return pid_gone(victim)

    await poll(victim_gone, what=f"worker {victim} exiting")
    # Its listening socket closed with it: every connection from now on reaches the survivor.
    assert await statuses(supervised.port, "/", BATCH) == [200] * BATCH
    await supervised.wait_for_lines("worker died; restarting", 1)
    died = next(line for line in supervised.output.splitlines() if "worker died" in line)
    assert f'"pid": {victim}' in died or f'"pid":{victim}' in died, died
    await supervised.wait_for_lines('"gateway started"', WORKERS + 1)

    async def replaced() -> bool:
        now = supervised.workers()
        return len(now) == WORKERS and victim not in now

    await poll(replaced, what="a new worker in place of the killed one")
    newcomer = (supervised.workers() - workers).pop()
    assert await statuses(supervised.port, "/", BATCH) == [200] * BATCH
    await supervised.wait_for_served(2 * BATCH)  # the survivor's and the newcomer's
    served = await supervised.served()
    assert served[newcomer] > 0, served
    status, body = await admin_json(supervised.admin_port, "/readyz")
    assert status == 200
    assert body["checks"]["workers"] == "ok"


async def test_metrics_on_the_supervisor_add_up_every_worker(supervised: Supervised) -> None:
    """/metrics on the supervisor's admin port counts the requests of both workers together."""
    assert await statuses(supervised.port, "/", BATCH) == [200] * BATCH
    assert await statuses(supervised.port, "/dashboard", 10) == [302] * 10
    await supervised.wait_for_served(BATCH + 10)
    served = await supervised.served()
    assert all(count > 0 for count in served.values()), served
    async with (
        fresh_client() as client,
        client.get(f"http://127.0.0.1:{supervised.admin_port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    assert requests_total(text) == BATCH + 10
    assert 'gateway_requests_total{auth="public",status_class="2xx"} 40.0' in text


async def test_revoke_through_the_supervisor_evicts_in_every_worker(
    supervised: Supervised, auth_api: Backend
) -> None:
    """POST /sessions/revoke on the supervisor evicts the session from both workers' caches."""
    token = "revoke-me-0123456789"
    auth_api.state.sessions[token] = dict(GOOD_USER)
    assert await statuses(supervised.port, "/dashboard", BATCH, token) == [200] * BATCH
    assert calls_for(auth_api, token) == WORKERS  # each worker validated once, then cached
    del auth_api.state.sessions[token]
    assert await statuses(supervised.port, "/dashboard", BATCH, token) == [200] * BATCH
    assert calls_for(auth_api, token) == WORKERS  # still served from the caches

    status, body = await revoke(supervised.admin_port, ADMIN_TOKEN, session=token)
    assert status == 200, body
    assert body["revoked"] is True
    assert body["workers"] == WORKERS
    assert body["local"] is True
    await supervised.wait_for_served(2 * BATCH)
    before = await supervised.served()
    assert await statuses(supervised.port, "/dashboard", BATCH, token) == [302] * BATCH
    await supervised.wait_for_served(3 * BATCH)
    after = await supervised.served()
    assert all(after[pid] > before.get(pid, 0) for pid in after), (before, after)
    # Nothing cached any more: every request asked the auth API (no negative cache), refused.
    assert calls_for(auth_api, token) == WORKERS + BATCH

    status, _ = await revoke(supervised.admin_port, "wrong-token-0123456789", session=token)
    assert status == 401


async def test_supervisor_readyz_names_the_auth_api_while_workers_serve_stale(
    supervised: Supervised, auth_api: Backend
) -> None:
    """The API erring past the ttl: both workers serve the session stale, and the supervisor's
    /readyz (which only the workers can tell) is 503 naming auth_api."""
    supervised.write_config(auth={"cache_ttl": 1, "stale_if_error": 30})
    supervised.process.signal(signal.SIGHUP)
    await supervised.wait_for_lines('"config reloaded"', WORKERS)
    token = "stale-workers-0123456789"
    auth_api.state.sessions[token] = dict(GOOD_USER)
    assert await statuses(supervised.port, "/dashboard", BATCH, token) == [200] * BATCH
    signed_in = time.monotonic()
    status, body = await admin_json(supervised.admin_port, "/readyz")
    assert (status, body["failing"]) == (200, []), body
    auth_api.state.answer = (503, "down for maintenance")
    await asyncio.sleep(max(0.0, signed_in + 1.05 - time.monotonic()))
    assert await statuses(supervised.port, "/dashboard", BATCH, token) == [200] * BATCH
    status, body = await admin_json(supervised.admin_port, "/readyz")
    assert (status, body["failing"]) == (503, ["auth_api"]), body
    assert body["checks"]["auth_api"].startswith("not ready: "), body


async def test_a_worker_restarted_after_a_refused_reload_runs_the_last_good_config(
    supervised: Supervised,
) -> None:
    """A worker that dies after a refused reload is replaced, running the config still in force."""
    supervised.config_path.write_text("upstream: [broken\n")
    supervised.process.signal(signal.SIGHUP)
    await supervised.wait_for_lines("reload refused", 1)
    os.kill(min(supervised.workers()), signal.SIGKILL)

    async def replaced_or_failed() -> bool:
        output = supervised.output
        return (
            count_lines(output, '"gateway started"') > WORKERS
            or count_lines(output, "worker died; restarting") > 1
        )

    await poll(replaced_or_failed, what="the killed worker replaced, or its replacement dying")
    assert count_lines(supervised.output, "worker died; restarting") == 1
    assert count_lines(supervised.output, '"gateway started"') == WORKERS + 1
    assert await statuses(supervised.port, "/dashboard", BATCH) == [302] * BATCH


async def test_workers_exit_when_the_supervisor_is_killed(supervised: Supervised) -> None:
    """SIGKILL to the supervisor takes its workers down too: no orphan keeps the port."""
    workers = supervised.workers()
    os.kill(supervised.pid, signal.SIGKILL)

    async def all_gone() -> bool:
        return all(pid_gone(pid) for pid in workers)

    await poll(all_gone, what="every worker exiting after its supervisor")
