"""Comparisons shared by the tests that run the Verilated and the reference engine."""

import numpy as np

__all__ = ["mismatch"]


def mismatch(hw, ref, msgs, what="observations"):
    """None if the record arrays ``hw`` and ``ref`` are equal, else what differs first
    (``msgs``: the messages, to name the first one that differs)."""
    if len(hw) != len(ref):
        return f"{len(hw)} {what} from verilator, {len(ref)} from the reference"
    bad = np.nonzero(hw != ref)[0]
    if not len(bad):
        return None
    i = bad[0]
    at = f"message {msgs[i]}" if msgs is not None else f"index {i}"
    return (f"{len(bad)} of {len(hw)} {what} differ; first at {i}: {at}"
            f"\n  verilator {hw[i]}\n  reference {ref[i]}")
