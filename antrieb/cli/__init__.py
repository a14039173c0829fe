"""The ``antrieb`` command. Thin: every command is a call into the public API.

:mod:`antrieb.cli.app` holds the app and what the command groups share; each other
module here is one command group and registers itself on the app when imported.
"""

from __future__ import annotations

import sys

from antrieb.cli import (  # noqa: F401  (each registers its commands on the app)
    bench,
    cache,
    cluster,
    converge,
    evaluate,
    experiment,
    host,
    images,
    mcp,
    store,
    tasks,
)
from antrieb.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
