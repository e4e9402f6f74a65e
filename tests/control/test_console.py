"""`obcore set/get/status/kill/arm/params/keys` and the interactive console, end to end."""

import io
import tomllib
from fractions import Fraction

import pytest

from obcore.control import params
from obcore.control.cli import main
from obcore.control.console import Console, Operator
from obcore.hw.registers import Q, Register, RegisterMap, kappa_term, to_fixed


@pytest.fixture
def obcore(server, client, capsys):
    """Run ``obcore ARGS`` against the (freshly reset) server: ``(exit status, stdout,
    stderr)``."""
    def run(*args):
        status = main([*args, "--engine-at", server.endpoint, "--timeout", "2000"])
        out, err = capsys.readouterr()
        return status, out, err
    return run


def values(obcore, *names):
    status, out, _ = obcore("get", *names)
    assert status == 0
    return dict(line.split(" = ") for line in out.splitlines())


def test_set_then_get_in_units_with_derived_kappa(obcore):
    status, out, err = obcore("set", "gamma", "0.2", "k", "2", "q_limit", "50")
    assert (status, err) == (0, "")
    assert "gamma = 0.1999999881 1/ticks" in out and "q_limit = 50 lots" in out
    got = values(obcore, "gamma", "k", "kappa_term", "q_limit")
    assert got["k"] == "2 1/ticks" and got["q_limit"] == "50 lots"
    kappa = float(got["kappa_term"].split()[0])
    assert kappa == pytest.approx(kappa_term("0.2", "2"), abs=2 ** -16)


def test_get_everything_and_array_elements(obcore):
    everything = values(obcore)
    assert {"id", "gamma", "best_bid[0]", "best_bid[1]", "book_flags[1]"} <= set(everything)
    assert "commit" not in everything
    assert values(obcore, "leverage[1]") == {"leverage[1]": "1 x"}
    status, _, _ = obcore("set", "leverage[1]", "2.5", "obi_touch_th", "0.5")
    assert status == 0
    assert values(obcore, "leverage", "obi_touch_th") == {
        "leverage[0]": "1 x", "leverage[1]": "2.5 x", "obi_touch_th[0]": "0.5 fraction",
        "obi_touch_th[1]": "0.5 fraction"}


@pytest.mark.parametrize("args, message", [
    (("set", "gama", "0.2"), "unknown register 'gama'; did you mean gamma"),
    (("set", "gamma", "300"), "gamma = 300 is out of range: allowed 5.960464478e-08..255 "
                              "1/ticks"),
    (("set", "gamma", "abc"), "gamma: 'abc' is not a number"),
    (("set", "gamma"), "set needs NAME VALUE pairs"),
    (("set", "best_bid", "3"), "cannot set best_bid: it is a read-only (ro) status register"),
    (("set", "kappa_term", "3"), "kappa_term is derived from gamma and k"),
    (("set", "leverage[2]", "3"), "leverage has 2 element(s): index 0..1, not 2"),
    (("set", "tau", "1", "gamma", "0.5", "q_limit", "-3"), "q_limit = -3 is out of range"),
    (("set", "gamma", "0.000001", "k", "0.0000001"), "gamma=1e-06, k=1e-07 gives kappa_term = "),
    (("get", "commit"), "commit is a command strobe (wo)"),
])
def test_bad_input_is_one_line_and_changes_nothing(obcore, args, message):
    before = values(obcore)
    status, out, err = obcore(*args)
    assert status != 0 and out == ""
    assert err.count("\n") == 1 and message in err, err
    assert err.startswith(f"obcore {args[0]}: error: ")
    after = values(obcore)
    assert {k: v for k, v in after.items() if not k.startswith("cycle")} == {
        k: v for k, v in before.items() if not k.startswith("cycle")}


@pytest.mark.parametrize("command", ["kill", "arm"])
def test_guard_commands(server, obcore, command):
    status, out, err = obcore(command)
    if command in server.engine.regmap:   # the guard gateware is in this build
        assert (status, out) == (0, f"{command}: wrote {command}\n")
    else:
        assert status == 2 and out == ""
        assert err == (f"obcore {command}: error: not available: this gateware has no "
                       f"`{command}` register\n")


def test_errors_list_every_problem(obcore):
    status, _, err = obcore("set", "gama", "1", "tau", "-1", "best_ask", "2")
    assert status == 2
    assert all(p in err for p in ("unknown register 'gama'", "tau = -1 is out of range",
                                  "cannot set best_ask"))


def test_unreachable_engine(capsys):
    assert main(["get", "gamma", "--engine-at", "tcp://127.0.0.1:9", "--timeout", "100"]) == 2
    err = capsys.readouterr().err
    assert err == ("obcore get: error: engine at tcp://127.0.0.1:9 did not answer within "
                   "100 ms (is `obcore sim` running there?)\n")


def test_status_once_and_watching(server, obcore):
    status, out, _ = obcore("status")
    assert status == 0 and out.startswith(f"engine sim/{server.backend}, 2 venue(s), 16 levels")
    assert "venue 0" in out and "book_flags" in out and "msg_count" in out
    status, out, _ = obcore("status", "--watch", "--count", "2", "--interval", "0.01")
    assert status == 0 and out.count(f"engine sim/{server.backend}") == 2


def test_params_save_and_load_round_trip(obcore, tmp_path):
    path = tmp_path / "p.toml"
    assert obcore("set", "gamma", "0.3", "leverage[1]", "4")[0] == 0
    saved = values(obcore)
    status, out, _ = obcore("params", "save", str(path))
    assert status == 0 and out.startswith("saved ")
    text = path.read_text()
    assert "kappa_term" not in text.split("\n", 1)[1].split("=")[0] and "gamma = " in text
    assert obcore("set", "gamma", "1", "leverage", "7")[0] == 0
    status, out, _ = obcore("params", "load", str(path))
    assert status == 0 and "in one commit" in out
    restored = values(obcore)
    assert {k: v for k, v in restored.items() if not k.startswith("cycle")} == {
        k: v for k, v in saved.items() if not k.startswith("cycle")}


@pytest.mark.parametrize("text, message", [
    ("gamma = 0.2\nq_limit = -1\nnope = 3\nleverage = [1]\n",
     "q_limit = -1 is out of range"),
    ("gamma = [0.2\n", "is not valid TOML"),
    ("[quoter]\ngamma = 0.2\n", "tables are not allowed (quoter)"),
    ("gamma = true\n", "gamma: a boolean is not a number"),
])
def test_bad_params_file_writes_nothing(obcore, tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    before = values(obcore, "gamma", "q_limit", "leverage")
    status, _, err = obcore("params", "load", str(path))
    assert status == 2 and message in err and err.count("\n") == 1
    assert values(obcore, "gamma", "q_limit", "leverage") == before
    if "nope" in text:
        assert "unknown register 'nope'" in err and "leverage: 1 values for 2" in err


def test_keys_command(tmp_path, capsys):
    assert main(["keys", str(tmp_path), "ops"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"server.key", "server.key_secret",
                                                    "ops.key_secret", "clients"}
    assert (tmp_path / "clients" / "ops.key").exists()


def test_interactive_console(server, client):
    script = "\n".join(["set gamma 0.5", "get gamma kappa_term", "set gamma 999", "frobnicate",
                        "kill", "heartbeat sideways", "params bogus", "status", "quit"])
    out = io.StringIO()
    console = Console(Operator(client, out), stdin=io.StringIO(script + "\n"), stdout=out)
    console.run()
    assert console.complete_get("gam", "get gam", 4, 7) == ["gamma"]
    assert console.complete_set("k", "set k", 4, 5) == ["k", "kappa_term"]
    assert console.complete_set("", "set gamma ", 10, 10) == []   # a value goes here
    assert console.complete_params("l", "params l", 7, 8) == ["load"]
    assert console.hint("gamma") == "1/ticks, 5.960464478e-08..255, rw"
    text = out.getvalue()
    assert "gamma = 0.5 1/ticks" in text and "kappa_term = " in text
    assert "error: gamma = 999 is out of range" in text
    assert "error: unknown command 'frobnicate'" in text
    assert "error: not available: this gateware has no `kill` register" in text or (
        "kill" in server.engine.regmap)
    assert "error: usage: heartbeat on [MS] | heartbeat off (MS: whole ms > 0)" in text
    assert "error: usage: params save FILE | params load FILE" in text
    assert f"engine sim/{server.backend}" in text


def test_params_files_hold_values_exactly():
    """Floats where they are exact, decimal strings where a float would round."""
    wide = Register("equity_x", Q(48, 16), "rw", "wide", count=2)
    regmap = RegisterMap([wide, Register("q", Q(8), "rw", "int")])
    values = {("equity_x", 0): Fraction((1 << 60) + 3, 1 << 16), ("equity_x", 1): Fraction(5, 4),
              ("q", 0): 7}
    text = params.dumps(regmap, values)
    assert 'equity_x = ["17592186044416.0000457763671875", 1.25]' in text and "q = 7" in text
    loaded = tomllib.loads(text)
    for (name, i), value in values.items():
        reg = regmap[name]
        got = loaded[name][i] if reg.count > 1 else loaded[name]
        assert to_fixed(reg, got) == to_fixed(reg, value)
