"""The ``evomp`` command line. Each command group lives in its own private module that
exposes ``register(subparsers)``; this module only assembles them."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from evomp._errors import EvompError

__all__ = ["main", "build_parser"]

# Command-group modules, each with ``register(subparsers) -> None``. A module that does
# not exist yet is skipped, so groups can land independently.
_GROUPS = ("_space", "_run", "_worker", "_status", "_hw", "_baseline", "_compare", "_report",
           "_export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evomp",
        description="Pareto fronts of accuracy against memory, energy and latency over "
        "per-channel weight and per-layer activation bit-widths.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _GROUPS:
        try:
            mod = importlib.import_module(f"evomp.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"evomp.cli.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def _torch_write_failed(e: RuntimeError) -> bool:
    """Whether ``e`` is torch.save's report of a failed write (disk full, file-size limit):
    PyTorch's zip writer raises RuntimeError without the OS error."""
    text = str(e)
    return "inline_container" in text or "PytorchStreamWriter" in text or \
        "file write failed" in text


def main(argv: Sequence[str] | None = None) -> int:
    # past the file-size limit (ulimit -f) a write then fails with EFBIG, reported as one
    # clear error, instead of the kernel's SIGXFSZ killing the process mid-write
    if hasattr(signal, "SIGXFSZ"):
        with contextlib.suppress(ValueError):  # not the main thread: leave it as it is
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except EvompError as e:
        print(f"evomp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evomp: interrupted; completed evaluations are saved", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``evomp hw list | head``): not an error of ours. Point
        # stdout at /dev/null so that the interpreter's final flush stays quiet, and exit
        # as a process killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    except OSError as e:  # a full disk, a read-only directory, ...: one line, no traceback
        from evomp.run import os_error

        print(f"evomp: error: {os_error(e)}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not _torch_write_failed(e):
            raise
        print("evomp: error: no space left on device (or the file-size limit, ulimit -f, was "
              "reached) while writing a model file; free space and run the same command "
              f"again: nothing recorded is lost ({e})", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
