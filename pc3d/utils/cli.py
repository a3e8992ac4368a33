"""The error rule of every pc3d entry point (tools/*.py, python -m pc3d): a pc3d error is the user's to
fix, so it prints one line, ``<tool>: error: <file or frame>: <what is wrong>``, and the tool exits 2;
``PC3D_DEBUG=1`` re-raises it for the traceback. Anything else is a bug and keeps its traceback."""
from __future__ import annotations

import os
import sys

from pc3d.errors import Pc3dError

EXIT_USER_ERROR = 2


def user_error(tool: str, error: Pc3dError) -> int:
    """Print the one-line report of `error` to stderr and return the exit status (re-raise under PC3D_DEBUG=1)."""
    if os.environ.get("PC3D_DEBUG") == "1":
        raise error
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    print(f"{tool}: error: {text}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def pc3d_error(exc: BaseException) -> Pc3dError | None:
    """`exc` when it is a pc3d error, else the pc3d error it was raised from (hydra's instantiate wraps
    what a constructor raised in an InstantiationException), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Pc3dError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None


def run_tool(tool: str, run, *args) -> int:
    """``run(*args)``'s exit status, with a pc3d error (however deeply wrapped) reported by ``user_error``;
    any other exception propagates with its traceback (a bug)."""
    try:
        return run(*args)
    except Exception as exc:
        error = pc3d_error(exc)
        if error is None:
            raise
        return user_error(tool, error)


def hydra_message(error: Exception) -> str:
    """One line from a hydra composition error (unknown override key, missing config option, bad override
    syntax): its first paragraph, and the options hydra offers, without the config search path."""
    head = str(error).split("\n\n")[0].split("Config search path")[0]
    text = "; ".join(line.strip().rstrip(".") for line in head.splitlines() if line.strip())
    options = getattr(error, "options", None)
    return f"{text} (options: {', '.join(options)})" if options else text
