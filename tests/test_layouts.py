"""The feed and order formats: encode/decode, numpy and Amaranth views agree, clear errors."""

import random

import numpy as np
import pytest
from amaranth.hdl import Const

from obcore.hw.layouts import (
    FEED,
    FEED_DTYPE,
    ORDER,
    ORDER_DTYPE,
    FeedKind,
    OrderKind,
    Side,
    decode_feed,
    decode_order,
    encode_feed,
    encode_order,
    feed_array,
    feed_layout,
    order_layout,
)


def _random_fields(fmt, rng):
    return {name: rng.randrange(1 << bits) for name, (_, bits) in fmt.offsets().items()}


@pytest.mark.parametrize("kind", list(FeedKind))
def test_feed_round_trip_every_kind(kind):
    word = encode_feed(kind, venue=3, side=Side.ASK, seq=0xDEADBEEF, price=1_000_001,
                       size=(1 << 31) - 1)
    assert decode_feed(word) == {"kind": int(kind), "venue": 3, "side": 1, "flags": 0,
                                 "seq": 0xDEADBEEF, "price": 1_000_001, "size": (1 << 31) - 1}


@pytest.mark.parametrize("kind", list(OrderKind))
def test_order_round_trip_every_kind(kind):
    word = encode_order(kind, venue=1, side=Side.BID, slot=2, seq=7, price=99, size=5)
    assert decode_order(word) == {"kind": int(kind), "venue": 1, "side": 0, "slot": 2,
                                  "seq": 7, "price": 99, "size": 5}


@pytest.mark.parametrize("fmt,dtype,layout", [(FEED, FEED_DTYPE, feed_layout),
                                              (ORDER, ORDER_DTYPE, order_layout)])
def test_numpy_bytes_and_amaranth_layout_agree(fmt, dtype, layout):
    """The same random messages read back identically through bytes, numpy and Amaranth."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    assert dtype.itemsize * 8 == fmt.bits == layout.size == 128
    for _ in range(200):
        fields = _random_fields(fmt, rng)
        word = fmt.encode(**fields)
        rec = np.frombuffer(word.to_bytes(fmt.nbytes, "little"), dtype=dtype)[0]
        assert {name: int(rec[name]) for name in dtype.names} == fields
        view = layout.const(fields)
        assert Const.cast(view).value == word
        assert {name: int(view[name]) for name in fields} == fields


def test_feed_array_matches_encoder():
    msgs = [{"kind": 1, "venue": 0, "side": 1, "flags": 0, "seq": 5, "price": 10, "size": 3},
            {"kind": 8, "venue": 0, "side": 0, "flags": 0, "seq": 0, "price": 0, "size": 0}]
    arr = feed_array(msgs)
    words = [int.from_bytes(r.tobytes(), "little") for r in arr]
    assert words == [FEED.encode(**m) for m in msgs]


@pytest.mark.parametrize("field,value,bits", [("price", 1 << 32, 32), ("seq", -1, 32),
                                              ("venue", 256, 8), ("size", 1 << 32, 32)])
def test_out_of_range_field_names_field_and_range(field, value, bits):
    with pytest.raises(ValueError, match=rf"feed\.{field} = {value} is out of range "
                                         rf"0\.\.{(1 << bits) - 1}"):
        encode_feed(FeedKind.LEVEL_SET, **{field: value})


def test_non_integer_field_rejected():
    with pytest.raises(ValueError, match=r"feed\.price must be an integer"):
        encode_feed(FeedKind.LEVEL_SET, price=1.5)
    with pytest.raises(ValueError, match=r"unknown field"):
        FEED.encode(kind=1, colour=3)


def test_signed_fields_round_trip_and_match_the_dtype():
    from obcore.hw.layouts import TELEM, TELEM_DTYPE

    word = TELEM.encode(spread=-5, obi_touch=-(1 << 15), obi_depth=(1 << 15) - 1, mid2=7)
    fields = TELEM.decode(word)
    assert (fields["spread"], fields["obi_touch"], fields["obi_depth"], fields["mid2"]) == (
        -5, -(1 << 15), (1 << 15) - 1, 7)
    rec = np.frombuffer(word.to_bytes(TELEM.nbytes, "little"), dtype=TELEM_DTYPE)[0]
    assert rec["spread"] == -5 and rec["obi_touch"] == -(1 << 15)
    for bad in ((1 << 15), -(1 << 15) - 1):
        with pytest.raises(ValueError, match=r"-32768\.\.32767 \(16-bit signed\)"):
            TELEM.encode(obi_touch=bad)
    assert TELEM.layout().size == 8 * TELEM_DTYPE.itemsize
