"""The `sensorium` command. Each feature module adds its own subcommands through `register(commands)`;
this file only wires them together, so a new capability never edits a central list of branches."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

# Modules exposing `register(commands: Commands)`.
COMMAND_MODULES: tuple[str, ...] = (
    "sensorium.data.cli",
    "sensorium.towers.cli",
    "sensorium.towers.checkpoint_cli",
    "sensorium.train.cli",
    "sensorium.eval.cli",
    "sensorium.index.cli",
    "sensorium.quickstart",
    "sensorium.data.world.cli",
    "sensorium.data.inspect",
    "sensorium.models.vlm_cli",
)


class Commands:
    """Subcommand registry: top-level commands and grouped ones (`sensorium data build ...`)."""

    def __init__(self, parser: argparse.ArgumentParser):
        self._sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def add(self, name: str, func: Callable[[argparse.Namespace], int | None], help: str,
            group: str | None = None) -> argparse.ArgumentParser:
        """Add `sensorium [group] name`; `func(args)` runs it and returns an exit code (None = 0)."""
        sub = self._group(group) if group else self._sub
        parser = sub.add_parser(name, help=help, description=help)
        parser.set_defaults(func=func)
        return parser

    def _group(self, group: str) -> argparse._SubParsersAction:
        if group not in self._groups:
            parser = self._sub.add_parser(group, help=f"{group} commands")
            parser.set_defaults(func=lambda args, p=parser: p.print_help() or 2)
            self._groups[group] = parser.add_subparsers(dest=f"{group}_command", metavar="COMMAND")
        return self._groups[group]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorium", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="less logging")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = Commands(parser)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .towers.base import MissingDependency

    try:
        code = args.func(args)
    except (MissingDependency, FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        # User-facing errors: one clear line, no traceback (use -v for one).
        if args.verbose:
            raise
        print(f"sensorium: error: {exc}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
