"""`workers: N`: N gateway processes on one listening port, supervised by one parent.

Each worker binds the port with SO_REUSEPORT and the kernel spreads connections between them. The
parent holds the admin listener: metrics are merged from every worker (prometheus-client's
multiprocess mode), revocations are passed to every worker over a private unix socket, signals are
passed on (SIGHUP after the parent has validated the file), and a worker that dies is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from prometheus_client import multiprocess

from gateway.admin import NOT_READY, READY_CHECK_TIMEOUT, RevokeRefused, revocation_digest
from gateway.cache import CookieHasher
from gateway.config import ConfigError, GatewayConfig, parse_config, read_config_text
from gateway.lifecycle import start_admin, start_certificates, start_shared_cache
from gateway.logs import configure_logging
from gateway.metrics import MULTIPROC_ENV, Metrics
from gateway.service import run_loop, stop_on_signals
from gateway.tls import PairRefused, ServerCertificates

if TYPE_CHECKING:
    # Imported where it is used: redis costs 7 MiB of memory a gateway without it need not pay.
    from gateway.shared_cache import SharedCache

log = structlog.get_logger("gateway.workers")

WORKER_ENV = "HAMRAH_GATEWAY_WORKER"
CONTROL_ENV = "HAMRAH_GATEWAY_CONTROL"
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0)
STABLE_SECONDS = 30.0
STOP_MARGIN = 10.0
CONTROL_TIMEOUT = 2.0


class Supervisor:
    """The parent process of `workers: N`."""

    def __init__(self, config_path: Path, config: GatewayConfig, config_text: str) -> None:
        self.config_path = config_path
        self.config = config
        self.config_text = config_text
        self.started_at: dict[int, float] = {}
        self.count = config.worker_count
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts: dict[int, int] = {}
        self.stopping = False
        self.home = Path(tempfile.mkdtemp(prefix="hamrah-gateway-"))
        self.shared: SharedCache | None = None
        # The supervisor loads the workers' pair too, so its /readyz can name a refused one.
        self.certificates: ServerCertificates | None = None
        self._watchers: set[asyncio.Task[None]] = set()

    def control_socket(self, index: int) -> Path:
        return self.home / f"worker-{index}.sock"

    @property
    def worker_config(self) -> Path:
        """The last config text the supervisor accepted; workers read this, never the file an
        operator may be halfway through editing (a worker restarted after a refused reload
        would otherwise start from the broken file)."""
        return self.home / "gateway.yaml"

    def _accept(self, text: str) -> None:
        staged = self.home / "gateway.yaml.new"
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, self.worker_config)

    async def run(self) -> int:
        metrics_dir = self.home / "metrics"
        metrics_dir.mkdir()
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
        self._accept(self.config_text)
        self.metrics = Metrics()
        stop = asyncio.Event()
        stop_on_signals(stop)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        async with AsyncExitStack() as stack:
            stack.callback(shutil.rmtree, self.home, ignore_errors=True)
            # The supervisor's own Redis connection makes the one shared revocation; the workers
            # hear of it (and of other replicas' revocations) on their own subscriptions.
            self.shared = await start_shared_cache(stack, self.config, lambda _digest: None)
            try:
                self.certificates = start_certificates(stack, self.config, self.metrics)
            except PairRefused as exc:
                log.error("cannot load the tls certificate", file=exc.file, reason=exc.reason)
                return 1
            stack.push_async_callback(self._stop_workers)
            for index in range(self.count):
                await self._spawn(index)
            if self.config.admin_address is not None:
                await start_admin(stack, self, self.config.admin_address)
            log.info("supervisor started", workers=self.count, pid=os.getpid())
            await stop.wait()
        log.info("supervisor stopped")
        return 0

    async def _spawn(self, index: int) -> None:
        env = dict(
            os.environ, **{WORKER_ENV: str(index), CONTROL_ENV: str(self.control_socket(index))}
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "--config", str(self.worker_config), env=env
        )
        self.procs[index] = proc
        self.started_at[index] = time.monotonic()
        watcher = asyncio.ensure_future(self._watch(index, proc))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
        if self.stopping:
            return
        # A worker that ran a while before dying starts the back-off afresh.
        if time.monotonic() - self.started_at.get(index, 0.0) > STABLE_SECONDS:
            self.restarts[index] = 0
        restarts = self.restarts.get(index, 0)
        delay = RESTART_DELAYS[min(restarts, len(RESTART_DELAYS) - 1)]
        log.error(
            "worker died; restarting", worker=index, pid=proc.pid, exit_code=code, delay=delay
        )
        self.restarts[index] = restarts + 1
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(index)

    def reload(self) -> None:
        """Validate the file here first, so a bad edit never reaches a worker."""
        try:
            text = read_config_text(self.config_path)
            config = parse_config(text, str(self.config_path))
        except ConfigError as exc:
            log.error("reload refused; the previous config stays", problems=list(exc.problems))
            return
        self.config, self.config_text = config, text
        self._accept(text)
        if self.certificates is not None and config.tls is not None:
            self.certificates.reload(config.tls)
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGHUP)
        log.info("reload passed to workers", workers=len(self.procs))

    async def _stop_workers(self) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        waits = [proc.wait() for proc in self.procs.values()]
        try:
            async with asyncio.timeout(self.config.shutdown_grace + STOP_MARGIN):
                await asyncio.gather(*waits)
        except TimeoutError:
            for proc in self.procs.values():
                if proc.returncode is None:
                    log.error("worker did not stop in time; killing it", pid=proc.pid)
                    proc.kill()
        for watcher in list(self._watchers):
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    # AdminBackend: what the admin routes ask of the supervisor.

    def current_config(self) -> GatewayConfig:
        return self.config

    async def degraded_checks(self) -> dict[str, str]:
        # A worker is ready once its control socket exists: it opens it after it listens.
        ready = [
            index
            for index, proc in self.procs.items()
            if proc.returncode is None and self.control_socket(index).exists()
        ]
        if not ready:
            workers = f"{NOT_READY}: no worker is listening yet"
        elif len(ready) < self.count:
            workers = f"degraded: {len(ready)}/{self.count} listening"
        else:
            workers = "ok"
        checks = {"workers": workers}
        if self.shared is not None:
            checks["redis"] = self.shared.status
        # Only the workers know that the auth API errs while they serve sessions stale.
        answers = await asyncio.gather(
            *(self._ask(index, "GET", "/checks", seconds=READY_CHECK_TIMEOUT) for index in ready),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, tuple) and "auth_api" in answer[1]:
                checks["auth_api"] = str(answer[1]["auth_api"])
                break
        if self.certificates is not None:
            checks["tls"] = self.certificates.check()
        return checks

    async def _ask(
        self,
        index: int,
        method: str,
        path: str,
        body: dict[str, str | None] | None = None,
        seconds: float = CONTROL_TIMEOUT,
    ) -> tuple[int, dict[str, Any]]:
        """One request to a worker's control socket: its status and JSON answer."""
        connector = aiohttp.UnixConnector(path=str(self.control_socket(index)))
        async with (
            aiohttp.ClientSession(connector=connector) as client,
            client.request(
                method,
                f"http://worker{path}",
                json=body,
                timeout=aiohttp.ClientTimeout(seconds),
            ) as response,
        ):
            answer: dict[str, Any] = await response.json()
            return response.status, answer

    def exposition(self) -> bytes:
        return self.metrics.exposition()

    async def revoke(self, session: str | None, digest: str | None) -> dict[str, object]:
        """Evict in every worker, and through Redis on every replica."""
        key = revocation_digest(
            CookieHasher.from_secret(self.config.auth.cache.secret), session, digest
        )
        body: dict[str, str | None] = (
            {"session": session} if session is not None else {"digest": digest}
        )
        evicted: list[bool] = []
        for index in range(self.count):
            try:
                status, result = await self._ask(index, "POST", "/revoke", body)
                if status == 400:
                    raise RevokeRefused(str(result.get("error")))
                evicted.append(bool(result.get("local")))
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "worker did not take the revocation", worker=index, error=type(exc).__name__
                )
        shared = None if self.shared is None else await self.shared.revoke(key)
        return {"local": any(evicted), "workers": len(evicted), "shared": shared}


def run_supervisor(config_path: Path, config: GatewayConfig) -> int:
    """Run `workers: N` processes under one supervising parent until SIGTERM."""
    configure_logging(config.log.level, config.log.format, config.auth.cookie)
    text = read_config_text(config_path)
    return run_loop(Supervisor(config_path, parse_config(text, str(config_path)), text).run())
