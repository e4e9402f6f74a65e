"""The ``obcore`` command: one entry point, one subcommand per feature."""

import argparse
import importlib
import sys

__all__ = ["main", "COMMANDS"]

# name -> module that defines ``add_parser(subparsers)`` and ``run(args) -> int``.
# Modules load lazily, so ``obcore --help`` does not import Amaranth or ZeroMQ.
COMMANDS = {
    "docs": "obcore.control.docs",
    "demo": "obcore.sim.demo",
    "replay": "obcore.sim.replay.cli",
}


def _parser():
    parser = argparse.ArgumentParser(
        prog="obcore", description="FPGA order-book and quote-pull engine.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv=None):
    """Run ``obcore``; returns the process exit status. Errors are one line on stderr."""
    args = _parser().parse_args(argv)
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
