"""Operator commands over the control protocol: one-shot subcommands and the interactive console."""

import argparse
import cmd
import os
import shlex
import sys
import time
from pathlib import Path

from ..sim.model import FLAG_CAPACITY, FLAG_CROSSED, FLAG_GAP, FLAG_LOCKED, FLAG_MISSING
from . import params
from .client import EngineClient
from .protocol import DEFAULT_ENDPOINT, create_keys

__all__ = ["Operator", "Console", "add_parser", "run"]

HISTORY = Path("~/.obcore_history").expanduser()
_FLAG_NAMES = {"book_flags": {FLAG_GAP: "gap", FLAG_CROSSED: "crossed", FLAG_LOCKED: "locked",
                              FLAG_CAPACITY: "capacity", FLAG_MISSING: "missing"}}


class Operator:
    """What the console and the one-shot commands do, over one :class:`EngineClient`.

    Values are in each register's unit (see ``obcore get``); output lines go to ``out``
    (default: the current ``sys.stdout``). Errors are raised (``ValueError``,
    ``RuntimeError``, ``OSError``) with one line.
    """

    def __init__(self, client, out=None):
        self.client, self.out, self._regs = client, out, None

    @property
    def regs(self):
        if self._regs is None:
            self._regs = self.client.registers()
        return self._regs

    def _print(self, *lines):
        for line in lines:
            print(line, file=self.out)

    def _describe(self, values):
        out = []
        for (name, i), value in values.items():
            reg = self.regs.regmap[name]
            out.append(f"{params.label(reg, i)} = {params.format_value(reg, value)}"
                       + (f" {reg.unit}" if reg.unit else ""))
        return out

    def set(self, words):
        """``NAME VALUE [NAME VALUE ...]``: one atomic change (derived registers included)."""
        if not words or len(words) % 2:
            raise ValueError("set needs NAME VALUE pairs, e.g. `set gamma 0.2 k 1.5`")
        written = params.apply(self.regs, dict(zip(words[::2], words[1::2], strict=True)))
        self._print(*self._describe(self.regs.get_many(written)))

    def get(self, names=()):
        """Values of ``names`` (``name`` or ``name[i]``), or of every readable register."""
        keys = []
        for name in names or [r.name for r in self.regs.regmap if r.access != "wo"]:
            reg, indices = params.resolve(self.regs.regmap, name)
            if reg.access == "wo":
                raise ValueError(f"{reg.name} is a command strobe (wo); it cannot be read")
            keys += [(reg.name, i) for i in indices]
        self._print(*self._describe(self.regs.get_many(keys)))

    def status(self):
        """The engine's status snapshot as a table: one column per venue."""
        snap, info = self.client.status(), self.client.info or self.client.hello()
        venues = info["venues"]
        feed = snap["feed"]
        head = (f"engine {info['engine']}/{info['backend']}, {venues} venue(s), "
                f"{info['levels']} levels")
        if feed:
            head += (f"; feed {feed['scenario']} (seed {feed['seed']}, {feed['pace']}): "
                     f"{feed['messages']} messages{', done' if feed['done'] else ''}")
        lines = [head, f"{'':<16}" + "".join(f"{'venue ' + str(v):>14}" for v in range(venues))]
        scalars = []
        for name, value in snap["regs"].items():
            if isinstance(value, list):
                lines.append(f"{name:<16}" + "".join(f"{self._cell(name, v):>14}"
                                                     for v in value))
            else:
                scalars.append(f"{name} {self._cell(name, value)}")
        self._print(*lines, "  ".join(scalars))

    @staticmethod
    def _cell(name, value):
        if name in _FLAG_NAMES:
            return ",".join(f for bit, f in _FLAG_NAMES[name].items() if value & bit) or "-"
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    def guard(self, command):
        """``kill``, ``arm``, ``clear`` or ``heartbeat`` (errors while the gateware lacks it)."""
        register = getattr(self.client, command)()["register"]
        self._print(f"{command}: wrote {register}")

    def params_save(self, path):
        values = params.save(self.regs, path)
        self._print(f"saved {len(values)} values to {path}")

    def params_load(self, path):
        written = params.apply(self.regs, params.load(path))
        self._print(f"loaded {path}: {len(written)} values in one commit")


class Console(cmd.Cmd):
    """The interactive console: the one-shot commands, plus history and tab completion."""

    intro = "obcore console: `help` lists commands, Tab completes commands and registers."
    prompt = "obcore> "

    def __init__(self, operator, stdin=None, stdout=None):
        super().__init__(stdin=stdin, stdout=stdout)
        self.op = operator
        self.use_rawinput = stdin is None

    def onecmd(self, line):
        try:
            return super().onecmd(line)
        except (ValueError, OSError, RuntimeError) as exc:
            print(f"error: {exc}", file=self.stdout)
            return False

    def emptyline(self):
        return False

    def default(self, line):
        print(f"error: unknown command {line.split()[0]!r}; `help` lists them", file=self.stdout)

    def do_set(self, arg):
        """set NAME VALUE [NAME VALUE ...]: change registers atomically (values in units)."""
        self.op.set(shlex.split(arg))

    def do_get(self, arg):
        """get [NAME ...]: show registers (all when none) in their units."""
        self.op.get(shlex.split(arg))

    def do_status(self, arg):
        """status: books, counters and flags per venue."""
        self.op.status()

    def do_kill(self, arg):
        """kill: pull every quote now (latched until `arm`)."""
        self.op.guard("kill")

    def do_arm(self, arg):
        """arm: allow quoting again after a pull."""
        self.op.guard("arm")

    def do_clear(self, arg):
        """clear: clear the guard's latched pull reasons."""
        self.op.guard("clear")

    def do_heartbeat(self, arg):
        """heartbeat on [MS] | off: send heartbeats every MS (default 100) from a thread."""
        match arg.split():
            case ["off"]:
                self.op.client.stop_heartbeat()
            case ["on"]:
                self.op.client.start_heartbeat(100)
            case ["on", ms] if ms.isdigit() and int(ms) > 0:
                self.op.client.start_heartbeat(int(ms))
            case _:
                raise ValueError("usage: heartbeat on [MS] | heartbeat off (MS: whole ms > 0)")

    def do_params(self, arg):
        """params save FILE | params load FILE: parameter sets as TOML (load is atomic)."""
        words = shlex.split(arg)
        if len(words) != 2 or words[0] not in ("save", "load"):
            raise ValueError("usage: params save FILE | params load FILE")
        getattr(self.op, f"params_{words[0]}")(words[1])

    def do_reset(self, arg):
        """reset: reset the engine (book, counters and registers)."""
        self.op.client.reset()

    def do_quit(self, arg):
        """quit: leave the console (also Ctrl-D)."""
        return True

    do_EOF = do_quit   # noqa: N815 (cmd.Cmd calls do_EOF on Ctrl-D)

    def _names(self, text, access):
        return [r.name for r in self.op.regs.regmap
                if r.name.startswith(text) and r.access in access]

    def complete_set(self, text, line, begidx, endidx):
        at_name = len(line[:begidx].split()) % 2 == 1   # set NAME VALUE NAME VALUE ...
        return self._names(text, ("rw",)) if at_name else []

    def complete_get(self, text, line, begidx, endidx):
        return self._names(text, ("rw", "ro", "w1c"))

    def complete_heartbeat(self, text, line, begidx, endidx):
        return [w for w in ("on", "off") if w.startswith(text)]

    def complete_params(self, text, line, begidx, endidx):
        return [w for w in ("save", "load") if w.startswith(text)]

    def hint(self, name):
        """A register's unit, range and access, shown next to completions."""
        reg = self.op.regs.regmap[name]
        lo, hi = reg.limits()
        return (f"{reg.unit or 'no unit'}, {params.format_value(reg, lo)}.."
                f"{params.format_value(reg, hi)}, {reg.access}"
                + (f", x{reg.count}" if reg.count > 1 else ""))

    def _show_matches(self, substitution, matches, longest):
        import readline
        print(file=self.stdout)
        for m in matches:
            print(f"  {m:<{longest}}  {self.hint(m) if m in self.op.regs.regmap else ''}",
                  file=self.stdout)
        print(self.prompt + readline.get_line_buffer(), end="", file=self.stdout, flush=True)

    def run(self):
        """The read-eval loop with readline history (~/.obcore_history) when interactive."""
        if not self.use_rawinput:
            return self.cmdloop()
        import readline
        readline.set_completer_delims(" \t")
        readline.set_completion_display_matches_hook(self._show_matches)
        if HISTORY.exists():
            readline.read_history_file(HISTORY)
        try:
            while True:
                try:
                    return self.cmdloop()
                except KeyboardInterrupt:   # Ctrl-C drops the line, as in a shell
                    print("^C", file=self.stdout)
                    self.intro = None
        finally:
            readline.set_history_length(1000)
            readline.write_history_file(HISTORY)


def add_parser(sub):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--engine-at", default=os.environ.get("OBCORE_ENGINE", DEFAULT_ENDPOINT),
                        metavar="ENDPOINT", help=f"engine endpoint (default $OBCORE_ENGINE or "
                                                 f"{DEFAULT_ENDPOINT})")
    common.add_argument("--timeout", type=float, default=1000, metavar="MS",
                        help="give up on an answer after MS milliseconds (default 1000)")
    common.add_argument("--curve", type=Path, metavar="KEYDIR",
                        help="CURVE keys folder (the engine's server.key, your NAME.key_secret)")
    common.add_argument("--key", default="client", metavar="NAME",
                        help="your key name in KEYDIR (default: client)")

    def add(name, help, func, **kw):
        p = sub.add_parser(name, help=help, parents=[common], **kw)
        p.set_defaults(run=run, action_=func)
        return p

    add("console", "interactive console (history, tab completion)", _console)
    add("set", "set registers atomically: NAME VALUE [NAME VALUE ...] in their units",
        lambda a, op: op.set(a.pairs)).add_argument("pairs", nargs="+", metavar="NAME VALUE")
    add("get", "show registers (all when none) in their units",
        lambda a, op: op.get(a.names)).add_argument("names", nargs="*", metavar="NAME")
    p = add("status", "books, counters and flags per venue", _status)
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=0.5, metavar="S",
                   help="seconds between refreshes (default 0.5)")
    p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N views")
    add("kill", "pull every quote now (latched until arm)", lambda a, op: op.guard("kill"))
    add("arm", "allow quoting again after a pull", lambda a, op: op.guard("arm"))
    p = add("params", "save or load a parameter set (TOML; load is atomic)",
            lambda a, op: getattr(op, f"params_{a.action}")(a.file))
    p.add_argument("action", choices=("save", "load"))
    p.add_argument("file", type=Path, metavar="FILE")
    keys = sub.add_parser("keys", help="create CURVE keys: the engine's pair and clients'")
    keys.add_argument("keydir", type=Path, metavar="KEYDIR")
    keys.add_argument("names", nargs="+", metavar="NAME", help="client names to authorise")
    keys.set_defaults(run=_keys)


def _keys(args):
    create_keys(args.keydir, *args.names)
    print(f"keys in {args.keydir}: server.key (give it to clients), "
          + ", ".join(f"{n}.key_secret" for n in args.names) + " (one per client; keep "
          "private), clients/ (what the engine accepts; restart it to reload)")
    return 0


def _console(args, op):
    Console(op).run()


def _status(args, op):
    shown = 0
    try:
        while True:
            if args.watch and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")   # home and clear: redraw in place
            op.status()
            shown += 1
            if not args.watch or shown == args.count:
                return
            time.sleep(args.interval)
    except KeyboardInterrupt:   # Ctrl-C is how --watch ends
        if not args.watch:
            raise


def run(args):
    """Connect, run the subcommand's action with an :class:`Operator`, close."""
    curve = (args.curve, args.key) if args.curve else None
    with EngineClient(args.engine_at, timeout=args.timeout, curve=curve) as client:
        args.action_(args, Operator(client))
    return 0
