"""The ``obcore`` command: one entry point, one subcommand per feature."""

import argparse
import importlib
import sys

__all__ = ["main", "COMMANDS"]

# command -> module that defines ``add_parser(subparsers)`` (registering its commands) and
# ``run(args) -> int``. Only the named command's module is imported (start-up stays short);
# `obcore --help` imports them all.
_CONSOLE = "obcore.control.console"
COMMANDS = {
    "docs": "obcore.control.docs",
    "demo": "obcore.sim.demo",
    "replay": "obcore.sim.replay.cli",
    "sim": "obcore.sim.server",
    "bench": "obcore.sim.bench",
    "synth": "obcore.sim.synth",
    "board": "obcore.control.board",
    **dict.fromkeys(("console", "set", "get", "status", "kill", "arm", "params", "keys"),
                    _CONSOLE),
}


def _parser(argv):
    """The parser, with only the module of the command named in ``argv`` when there is one."""
    parser = argparse.ArgumentParser(
        prog="obcore", description="FPGA order-book and quote-pull engine.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    first = next((a for a in argv if not a.startswith("-")), None)
    modules = [COMMANDS[first]] if first in COMMANDS else dict.fromkeys(COMMANDS.values())
    for module in modules:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv=None):
    """Run ``obcore``; returns the process exit status. Errors are one line on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"obcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"obcore {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
