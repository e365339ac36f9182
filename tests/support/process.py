"""The gateway as a real process: started from its command line, stopped with real signals."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

START_DEADLINE = 15.0
EXIT_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_port(port: int, deadline: float = START_DEADLINE) -> None:
    """Return once something accepts connections on the port; fail after the deadline."""
    async with asyncio.timeout(deadline):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


class GatewayProcess:
    """`python -m gateway --config FILE` with its output collected in a file."""

    def __init__(
        self, config_path: Path, output_path: Path, *args: str, nofile: int | None = None
    ) -> None:
        """`nofile`: the process's RLIMIT_NOFILE (soft and hard), as a container might set it."""
        self.config_path = config_path
        self.output_path = output_path
        self._output = output_path.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")

        def limit_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(config_path), *args],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=limit_files,
        )

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    async def wait_exit(self, deadline: float = EXIT_DEADLINE) -> int:
        async with asyncio.timeout(deadline):
            while (code := self.proc.poll()) is None:
                await asyncio.sleep(0.05)
        self._output.close()
        return code

    async def wait_for_output(self, text: str, deadline: float = START_DEADLINE) -> None:
        async with asyncio.timeout(deadline):
            while text not in self.output:
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited early:\n{self.output}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._output.close()
