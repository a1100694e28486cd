"""A real `cutalign serve` process for tests: a free loopback port, a bearer key, start/kill/restart.

Used through the session fixture `served_tiny_model` (tests/conftest.py), or directly:

    with ServedModel(model_dir).running() as server:
        OpenAIGenerator(server.model, base_url=server.base_url, api_key_env=server.api_key_env)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

KEY_ENV = "CUTALIGN_TEST_SERVER_KEY"
KEY = "test-key-not-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServedModel:
    """One `cutalign serve MODEL` subprocess; `kill()` + `start()` keep the same port (a restart)."""

    def __init__(self, model_dir: str | Path, *, model: str = "tiny", api_key: str | None = KEY,
                 extra_args: tuple[str, ...] = ("--batch_wait_ms", "20"), startup_timeout: float = 120.0) -> None:
        self.model_dir = Path(model_dir)
        self.model = model
        self.api_key = api_key
        self.api_key_env = KEY_ENV if api_key is not None else None
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="cutalign-serve-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def start(self) -> ServedModel:
        # One compute thread: the server and the test process share a few cores, and two spinning
        # OpenMP pools on two busy cores make a tiny model's generation many times slower.
        env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
        if self.api_key is not None:
            env[KEY_ENV] = self.api_key
            os.environ[KEY_ENV] = self.api_key  # clients in this process read it by name
        command = [sys.executable, "-m", "cutalign", "serve", str(self.model_dir), "--port", str(self.port),
                   "--served_model_name", self.model, *self.extra_args]
        if self.api_key is not None:
            command += ["--api_key_env", KEY_ENV]
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cutalign serve exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"cutalign serve did not answer within {self.startup_timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL (a crash), then wait for the port to be free."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), SIGKILL if it hangs."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    def restart(self) -> ServedModel:
        self.kill()
        return self.start()

    @contextlib.contextmanager
    def running(self) -> Iterator[ServedModel]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
