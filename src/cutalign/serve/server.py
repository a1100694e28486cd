"""`serve`: run the OpenAI-compatible app with uvicorn (loopback by default)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cutalign.generation.base import Generator


def api_key_from_env(api_key_env: str | None) -> str | None:
    """The bearer key from the named environment variable (None: no key required)."""
    if api_key_env is None:
        return None
    key = os.environ.get(api_key_env)
    if not key:
        raise ValueError(f"environment variable {api_key_env} is not set (it must hold the server's API key)")
    return key


def serve(
    generator_or_model: Generator | str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key_env: str | None = None,
    log_level: str = "warning",
    **app_options: Any,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM shut down cleanly). `app_options`: see `create_app`."""
    import uvicorn

    from cutalign.serve.app import create_app

    app = create_app(generator_or_model, api_key=api_key_from_env(api_key_env), **app_options)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)).run()
