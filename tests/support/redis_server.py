"""A real `redis-server` on a free loopback port, for tests: started, killed and restarted.

    server = await start_redis()          # answers PING before this returns
    server.url                            # redis://127.0.0.1:PORT/0
    await server.stop()                   # SIGKILL (a crash); stop(signal.SIGTERM) for a clean exit
    server.pause(); server.resume()       # SIGSTOP / SIGCONT: a hung server, then not
    await server.restart()                # the same port again, empty (no persistence)
    await server.aclose()                 # stopped and its temporary directory removed

Nothing is persisted (`--save '' --appendonly no`), so a restarted server starts empty.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.support.process import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_DEADLINE = 10.0
STOP_DEADLINE = 10.0


def redis_available() -> bool:
    return Path(REDIS_SERVER).exists()


async def _answers_ping(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        async with asyncio.timeout(1.0):
            line = await reader.readline()
        return line == b"+PONG\r\n"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


class RedisServer:
    """One redis-server process at a time on a fixed port, its output in the temp directory."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def output(self) -> str:
        log = self.workdir / "redis.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def arguments(self) -> list[str]:
        return [
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
            *("--dir", str(self.workdir), "--daemonize", "no"),
        ]

    async def start(self, deadline: float = START_DEADLINE) -> None:
        """Start the server and return once it answers PING; fail after the deadline."""
        if self.running:
            raise RuntimeError(f"redis-server is already running on port {self.port}")
        self.starts += 1
        with (self.workdir / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, *self.arguments()],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proc = self.proc
        try:
            async with asyncio.timeout(deadline):
                while not await _answers_ping(self.port):
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"redis-server exited with {proc.returncode}:\n{self.output}"
                        )
                    await asyncio.sleep(0.02)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(
                f"redis-server did not answer PING within {deadline}s:\n{self.output}"
            ) from None

    async def stop(
        self, sig: signal.Signals = signal.SIGKILL, deadline: float = STOP_DEADLINE
    ) -> None:
        """Signal the server (SIGKILL by default: a crash) and wait until it has exited."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig != signal.SIGKILL:
                proc.send_signal(signal.SIGCONT)  # a paused server could not act on it
        try:
            async with asyncio.timeout(deadline):
                while proc.poll() is None:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            proc.kill()
            proc.wait()
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung Redis)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    async def restart(self, deadline: float = START_DEADLINE) -> None:
        """Start again on the same port (stopping first if it still runs)."""
        await self.stop()
        await self.start(deadline)

    async def aclose(self) -> None:
        await self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def start_redis(port: int | None = None) -> RedisServer:
    """A running redis-server on the given port or a free one (call `aclose()` when done)."""
    workdir = Path(tempfile.mkdtemp(prefix="gateway-redis-"))
    server = RedisServer(port if port is not None else free_port(), workdir)
    try:
        await server.start()
    except BaseException:
        await server.aclose()
        raise
    return server
