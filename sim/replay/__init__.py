"""Market-data replay: recorded formats to native feed messages."""
