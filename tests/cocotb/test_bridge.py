"""The board bridge end to end on Verilator (bridge_tb.py), and the host's frame decoder."""

import socket
import threading

import pytest
from harness import run_cocotb

from obcore.control.board import BoardEngine, BoardError, FrameDecoder, SocketTransport
from obcore.hw.boards.bridge import BRIDGE_BASE, SOF, Op, encode_frame
from obcore.hw.boards.top import BooksEngine, BridgedCore
from obcore.hw.top import Engine

VENUES, LEVELS, DIVISOR = 2, 4, 4   # must match bridge_tb.py
BOOKS = (1, 2)


def test_bridge_cocotb():
    run_cocotb(BridgedCore(Engine(VENUES, LEVELS), DIVISOR), "bridge", "bridge_tb")


def test_books_bridge_cocotb():
    run_cocotb(BridgedCore(BooksEngine(*BOOKS), DIVISOR), "bridge_books", "bridge_tb",
               extra_env={"BRIDGE_CORE": "books"})


def test_decoder_resyncs_and_counts():
    good = encode_frame(Op.DATA, 5, b"\x01\x02\x03\x7e")
    bad = bytearray(encode_frame(Op.ACK, 6))
    bad[-1] ^= 0x80
    too_long = bytes([SOF, Op.OBS, 1, 200])
    dec = FrameDecoder()
    stream = b"junk" + good[:6] + bytes(bad) + too_long + good + encode_frame(Op.ORDER, 9, b"")
    frames = []
    for i in range(0, len(stream), 3):   # in pieces, as a port delivers them
        frames += dec.feed(stream[i:i + 3])
    assert frames == [(Op.DATA, 5, b"\x01\x02\x03\x7e"), (Op.ORDER, 9, b"")]
    assert dec.counts == {"frames": 2, "crc_errors": 1, "truncated": 1, "oversize": 1}
    assert dec.feed(encode_frame(0x66, 1, b"x")) == [(0x66, 1, b"x")]


def test_board_engine_refuses_a_port_without_a_bridge():
    """The transport is injectable: a socket pair stands in for the serial port, and a
    thread answers the bridge-id read with something else."""
    host, board = socket.socketpair()

    def answer():
        dec = FrameDecoder()
        while True:
            data = board.recv(4096)
            if not data:
                return
            for _, tag, payload in dec.feed(data):
                assert int.from_bytes(payload, "little") == BRIDGE_BASE
                board.sendall(encode_frame(Op.DATA, tag, (0x1234).to_bytes(4, "little")))

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with pytest.raises(BoardError, match="no obcore bridge answers: id reads 0x00001234"):
        BoardEngine(SocketTransport(host), timeout=2)
    host.close()
    thread.join(5)
    board.close()


def test_board_engine_times_out_on_a_silent_port():
    host, board = socket.socketpair()
    with pytest.raises(BoardError, match="no reply to READ within 0.2 s"):
        BoardEngine(SocketTransport(host), timeout=0.2, retries=1)
    assert board.recv(100).count(SOF) == 3   # the flush, and the read sent twice
    host.close()
    board.close()


def test_board_command_reports_a_missing_port(capsys):
    from obcore.control.cli import main

    assert main(["board", "--port", "/dev/obcore-no-such-port", "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("obcore board: error:")
    assert "no-such-port" in err or "pyserial is not installed" in err
