"""Subcommand registry of the ``lsic`` command; each entry calls into one workflow."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommands. Later stages append their own ``_add_<name>`` here."""
