"""The ``lsic`` command: a thin layer of argument parsing over the workflows.

The subcommands, their flags and their few lines over each workflow live in
``workflows/_commands.py`` (registered by :func:`_add_subcommands`); a
user error (:class:`lsic.pipeline.LsicError`) becomes one line on stderr and
exit code 2, while a real bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lsic.pipeline import LsicError, __version__

log = logging.getLogger("lsic")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lsic",
        description="Large-scale image classification on Dask (Lin et al., CVPR 2011).",
    )
    parser.add_argument("--version", action="version", version=f"lsic {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output: -v debug for lsic, -vv debug for everything")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_subcommands(sub)
    return parser


def _add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register every stage's subcommand; each stage module owns its flags."""
    from . import _commands

    _commands.register(sub)


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Stage progress from lsic at INFO by default; other libraries only warn unless -vv."""
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except LsicError as exc:
        print(f"lsic: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lsic: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
