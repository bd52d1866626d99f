"""Sensorium: align, retrieve, answer and serve any modality.

Start with `sensorium quickstart` (data, alignment, evaluation, report), `sensorium models` (packaged models),
`sensorium search runs/quickstart/index "a red apple"`, `sensorium serve runs/quickstart/index` and `sensorium chat decoder --image scene.png "What is this?"`.
Each command's `--help` says what it reads and writes. Recipe commands take dotted overrides (`train.lr=3e-4`)
anywhere after their arguments."""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from collections.abc import Callable, Sequence

# Modules exposing `register(commands: Commands)`.
COMMAND_MODULES: tuple[str, ...] = (
    "sensorium.cli.data",
    "sensorium.cli.towers",
    "sensorium.cli.checkpoint",
    "sensorium.cli.align",
    "sensorium.cli.train",
    "sensorium.cli.eval",
    "sensorium.cli.index",
    "sensorium.cli.quickstart",
    "sensorium.cli.vlm",
    "sensorium.cli.models",
    "sensorium.cli.bench",
    "sensorium.cli.serve",
)


# Help of the command groups (`sensorium data --help`, ...).
GROUPS: dict[str, str] = {
    "data": "build, generate and inspect datasets (WebDataset shards, manifests, folders)",
    "train": "train from a recipe: align (composer heads), clip, unified, vlm, symile-xor",
    "towers": "the packaged pretrained encoders, and how the speech tower is made",
    "checkpoint": "inspect and convert HF transformers / open_clip checkpoint directories",
    "vlm": "evaluate language decoder runs",
    "bench": "the evaluation harness: MCQ, yes/no, VQA, captioning, retrieval; World-Bench built in",
    "index": "persistent search indexes of any modality: build, add, remove, info",
}
OVERRIDE = re.compile(r"^[A-Za-z_][\w.\-]*=")


class Commands:
    """Subcommand registry: top-level commands and grouped ones (`sensorium data build ...`)."""

    def __init__(self, parser: argparse.ArgumentParser):
        self._sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        self._groups: dict[str, argparse._SubParsersAction] = {}
        self._pending: list[tuple[argparse.ArgumentParser, str]] = []

    def add(self, name: str, func: Callable[[argparse.Namespace], int | None], help: str,
            group: str | None = None, overrides: bool = False,
            example: str = "train.steps=100 seed=1") -> argparse.ArgumentParser:
        """Add `sensorium [group] name`; `func(args)` runs it and returns an exit code (None = 0). With
        `overrides`, `args.overrides` collects every `key.path=value` argument, wherever it stands after the
        command's own positional arguments (also after options such as --config)."""
        sub = self._group(group) if group else self._sub
        parser = sub.add_parser(name, help=help, description=help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.set_defaults(func=func, accepts_overrides=overrides, command_parser=parser)
        if overrides:  # added last (in `finish`), after the command's own positional arguments
            self._pending.append((parser, example))
        return parser

    def finish(self) -> None:
        """Give each recipe command its trailing KEY=VALUE positional."""
        for parser, example in self._pending:
            parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                                help=f"recipe overrides in dotted form, e.g. {example}")
        self._pending.clear()

    def _group(self, group: str) -> argparse._SubParsersAction:
        if group not in self._groups:
            text = GROUPS.get(group, f"{group} commands")
            parser = self._sub.add_parser(group, help=text, description=text)
            parser.set_defaults(func=lambda args, p=parser: p.print_help() or 2)
            self._groups[group] = parser.add_subparsers(dest=f"{group}_command", metavar="COMMAND")
        return self._groups[group]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorium", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="less logging, no progress")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks on errors")
    commands = Commands(parser)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    commands.finish()
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, collecting `key=value` overrides that follow options (argparse stops a positional list at the
    first option) for commands that take them; anything else unknown is an error."""
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command_parser", None)
    if extra and command is not None:  # an optional positional written after options (`search RUN -k 3 "text"`)
        for action in command._actions:
            if (action.nargs == "?" and not action.option_strings and getattr(args, action.dest, None) is None
                    and extra and not extra[0].startswith("-") and not OVERRIDE.match(extra[0])):
                setattr(args, action.dest, extra.pop(0))
    if extra:
        if getattr(args, "accepts_overrides", False):
            stray = [x for x in extra if not OVERRIDE.match(x)]
            if stray:
                parser.error(f"unrecognized arguments: {' '.join(stray)} (overrides look like key.path=value)")
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, LookupError, OSError, RuntimeError,
                                                ArithmeticError, ImportError)


def error_line(exc: BaseException) -> str:
    """One line for a failed command: the message of an error caused by input (which names the file, field or
    value and the fix), or, for anything else (a bug), its type and message and how to see the traceback."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(message).split()) or type(exc).__name__
    if isinstance(exc, USER_ERRORS):
        return text
    return f"internal error {type(exc).__name__}: {text} (a bug: rerun with -v for the traceback and report it)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM; training saves a checkpoint first and says where
        if args.verbose:
            raise
        print(f"sensorium: {exc or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except Exception as exc:
        if args.verbose:
            raise
        print(f"sensorium: error: {error_line(exc)}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
