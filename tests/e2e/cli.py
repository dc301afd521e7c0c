"""Run the ``fraudstream`` command as a user does (a child process, its own environment)."""

from __future__ import annotations

import os
import subprocess
import sys


def fraudstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GX_ANALYTICS_ENABLED": "False", **(env or {})},
        timeout=300,
    )
