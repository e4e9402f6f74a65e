"""Native feed files: raw 16-byte ``FEED_DTYPE`` records, read and written as streams."""

import contextlib

import numpy as np

from ...hw.layouts import FEED, FEED_DTYPE, FeedKind, feed_array
from .base import Update, open_stream

__all__ = ["read_native", "write_native", "MAX_VENUES", "CHUNK"]

MAX_VENUES = 16     # BookModel's (and the hardware's) venue limit
CHUNK = 4096        # records per read or write: bounded memory, few numpy calls
_SIZE = FEED_DTYPE.itemsize
_KINDS = {int(k): k.name.lower() for k in FeedKind}


def read_native(paths, tick=None, lot=None, venue=None, stats=None):
    """Stream updates from native feed files (optionally gzipped), one per record.

    Records are replayed as they are, sequence numbers and venues included: ``tick``, ``lot``
    and ``venue`` must stay ``None``. ``exch_seq`` is the record's index from 0 in its file,
    ``kind`` its FeedKind name (``"malformed"`` for an unknown kind), ``ts_ns`` is ``None``
    (time is in the TICK records). A record for no valid venue reports venue 0.
    """
    del stats
    if tick is not None or lot is not None or venue is not None:
        raise ValueError("native records are already in ticks, lots and venues; "
                         "--tick, --lot and --venue do not apply")
    names = [f.name for f in FEED.fields]
    for path in paths:
        with contextlib.ExitStack() as stack:
            stream, index, rest = open_stream(path, None, stack), 0, b""
            while chunk := stream.read(CHUNK * _SIZE):
                whole = (len(rest) + len(chunk)) // _SIZE * _SIZE
                data, rest = rest + chunk, (rest + chunk)[whole:]
                for record in np.frombuffer(data[:whole], FEED_DTYPE).tolist():
                    msg = dict(zip(names, record, strict=True))
                    row_venue = msg["venue"] if msg["venue"] < MAX_VENUES else 0
                    yield Update(row_venue, index, None, _KINDS.get(msg["kind"], "malformed"),
                                 (msg,), f"{path}:{index}")
                    index += 1
            if rest:
                raise ValueError(f"{path}: ends {len(rest)} bytes into record {index} (the size "
                                 f"is not a multiple of {_SIZE} bytes)")


def write_native(path, messages):
    """Write feed message dicts to ``path`` as ``FEED_DTYPE`` records; returns the count."""
    count, batch = 0, []
    with open(path, "wb") as out:
        for msg in messages:
            batch.append(msg)
            if len(batch) == CHUNK:
                out.write(feed_array(batch).tobytes())
                count, batch = count + len(batch), []
        if batch:
            out.write(feed_array(batch).tobytes())
    return count + len(batch)
