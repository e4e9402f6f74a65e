"""Market-data replay: recorded formats to native feed messages."""

from .base import Book, Scale, Stats, Update, with_ticks
from .binance import read_binance
from .bybit import read_bybit
from .databento import read_databento
from .lobster import read_lobster
from .native import read_native, write_native
from .runner import replay
from .tardis import read_tardis

__all__ = ["Book", "Scale", "Stats", "Update", "with_ticks", "read_binance", "read_bybit",
           "read_databento", "read_lobster", "read_native", "write_native", "read_tardis",
           "replay"]
