"""8N1 UART receiver and transmitter with byte streams, for the board bridge."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "divisor_for", "MIN_DIVISOR", "MAX_BAUD_ERROR"]

# The receiver samples each bit once, in its middle; below 4 clocks per bit the middle is too
# close to an edge for a real cable (the simulator would still pass).
MIN_DIVISOR = 4
# An 8N1 receiver samples the stop bit 9.5 bits after the start edge, so both ends together
# may be off by ~5%; allow each end half of that.
MAX_BAUD_ERROR = 0.025


def divisor_for(clock_hz, baud):
    """Clocks per bit for ``baud`` at ``clock_hz``; ValueError if it is too coarse or too far."""
    if not (isinstance(baud, int) and baud > 0):
        raise ValueError(f"baud must be a positive integer, not {baud!r}")
    divisor = round(clock_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{baud} baud needs at least {MIN_DIVISOR} clocks per bit; "
                         f"{clock_hz / 1e6:g} MHz gives {clock_hz / baud:.2f}")
    error = abs(clock_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"{baud} baud is {error:.1%} off at {clock_hz / 1e6:g} MHz "
                         f"(divisor {divisor}); the limit is {MAX_BAUD_ERROR:.1%}")
    return divisor


def _check_divisor(divisor):
    if not (isinstance(divisor, int) and divisor >= MIN_DIVISOR):
        raise ValueError(f"divisor must be an integer >= {MIN_DIVISOR}, not {divisor!r}")


class UARTRx(wiring.Component):
    """Receives 8N1 bytes on ``rx`` (``divisor`` clocks per bit) into the ``bytes`` stream.

    ``bytes`` holds one received byte until it is taken; a byte that completes while the
    previous one is still held is dropped and ``overrun`` strobes. A stop bit that reads 0
    drops the byte and strobes ``frame_error``; the receiver then waits for the line to go
    idle (high), so a held-low line (a break, an unplugged cable) counts once.
    """

    rx: In(1, init=1)
    bytes: Out(stream.Signature(8))
    overrun: Out(1)
    frame_error: Out(1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self.divisor))
        bit = Signal(range(9))
        shift = Signal(8)
        # A byte is complete when the stop bit is sampled; the held byte is free when taken.
        with m.If(self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"), m.If(~rx):
                # First sample half a bit after the start edge: the start bit's middle.
                m.d.sync += [timer.eq(self.divisor // 2 - 1), bit.eq(0)]
                m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += timer.eq(self.divisor - 1)
                    # A start bit gone high by its middle was a glitch, not a byte.
                    m.next = "DATA"
                    with m.If(rx):
                        m.next = "IDLE"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(bit + 1)]
                    with m.If(bit == 8):   # the stop bit
                        with m.If(rx):
                            with m.If(self.bytes.valid & ~self.bytes.ready):
                                m.d.comb += self.overrun.eq(1)
                            with m.Else():
                                m.d.sync += [self.bytes.payload.eq(shift),
                                             self.bytes.valid.eq(1)]
                            m.next = "IDLE"
                        with m.Else():
                            m.d.comb += self.frame_error.eq(1)
                            m.next = "BREAK"
                    with m.Else():
                        m.d.sync += shift.eq(Cat(shift[1:], rx))   # LSB first
            with m.State("BREAK"), m.If(rx):
                m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Sends the bytes of the ``bytes`` stream as 8N1 on ``tx``, ``divisor`` clocks per bit.

    ``bytes.ready`` is high only while the transmitter is idle, so a byte is taken when its
    predecessor's stop bit has been sent in full.
    """

    bytes: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        # Start bit, 8 data bits LSB first, stop bit; shifted out from bit 0.
        frame = Signal(10, init=1)
        left = Signal(range(11))
        m.d.comb += [self.tx.eq(frame[0]), self.bytes.ready.eq(left == 0)]
        with m.If(self.bytes.valid & self.bytes.ready):
            m.d.sync += [frame.eq(Cat(0, self.bytes.payload, 1)), left.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(left != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                # Shift in 1s so the line rests high after the stop bit.
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), left.eq(left - 1),
                             timer.eq(self.divisor - 1)]
        return m
