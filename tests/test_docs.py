"""The committed generated docs match the definitions they are generated from."""

from pathlib import Path

import pytest

from obcore.control.docs import GENERATED

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_doc_is_current(name):
    path = DOCS / name
    assert path.exists(), f"{path} is missing: run `obcore docs`"
    assert path.read_text() == GENERATED[name](), f"{path} is stale: run `obcore docs`"


def test_feed_doc_lists_every_field_and_kind():
    from obcore.hw.layouts import FEED, FeedKind
    text = GENERATED["feed.md"]()
    for f in FEED.fields:
        assert f"`{f.name}`" in text
    for k in FeedKind:
        assert f"`{k.name}`" in text
