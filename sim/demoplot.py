"""The demo's plot: prices and own quotes, depth, inventory and P&L, with pulls shaded."""

import numpy as np

from ..hw.layouts import ObsStatus, OrderKind

__all__ = ["plot", "own_quotes"]


def own_quotes(obs, orders, cycles, venue=0):
    """Our resting bid and ask (slot 0 of ``venue``) at each observation; NaN when none."""
    at = np.searchsorted(cycles, obs["cycle"].astype(np.uint64), side="right")
    resting = [np.nan, np.nan]
    per_order = np.full((len(orders) + 1, 2), np.nan)
    for i, o in enumerate(orders):
        mine = o["venue"] == venue and o["slot"] == 0
        if o["kind"] in (OrderKind.NEW, OrderKind.REPLACE) and mine:
            resting[int(o["side"])] = float(o["price"])
        elif o["kind"] == OrderKind.CANCEL and mine:
            resting[int(o["side"])] = np.nan
        elif o["kind"] == OrderKind.CANCEL_ALL:
            resting = [np.nan, np.nan]
        per_order[i + 1] = resting
    return per_order[at]


def plot(path, phases, run, title, venues=1):
    """Write a PNG of a :class:`~obcore.sim.demo.Run` against the feed message index:
    venue 0's touch and our quotes (and venue 1's mid), depth, inventory and P&L; phases
    tinted and labelled, pulled stretches shaded red. False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    obs = run.obs
    valid = (obs["status"] & ObsStatus.VALID) != 0
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(11, 8.5),
                                        height_ratios=(3, 1.5, 1.5))
    mine = valid & (obs["venue"] == 0)
    x, o = np.nonzero(mine)[0], obs[mine]
    ax1.plot(x, o["best_bid"], lw=0.7, color="C0", label="best bid")
    ax1.plot(x, o["best_ask"], lw=0.7, color="C1", label="best ask")
    quotes = own_quotes(obs, run.orders, run.cycles)[mine]
    ax1.plot(x, quotes[:, 0], lw=1.4, color="C2", label="our bid")
    ax1.plot(x, quotes[:, 1], lw=1.4, color="C3", label="our ask")
    for v in range(venues):
        at = valid & (obs["venue"] == v)
        xv = np.nonzero(at)[0]
        ax2.plot(xv, obs["bid_depth"][at], lw=0.7, label=f"venue {v} bid depth (top N)")
        ax2.plot(xv, obs["ask_depth"][at], lw=0.7, label=f"venue {v} ask depth (top N)")
        if v:
            mid = (obs["best_bid"][at].astype(float) + obs["best_ask"][at]) / 2
            ax1.plot(xv, mid, lw=0.9, color="C4", label=f"venue {v} mid")
    for ax in (ax1, ax2, ax3):
        ax.fill_between(np.arange(len(obs)), 0, 1, where=run.pulled, color="red",
                        alpha=0.12, transform=ax.get_xaxis_transform(),
                        label="quotes pulled" if ax is ax1 else None)
    ax1.set_ylabel(f"price (ticks){', venue 0' if venues > 1 else ''}")
    ax1.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax1.legend(loc="lower left", fontsize=7, ncol=2)
    ax1.set_title(title)
    ax2.set_ylabel("lots")
    ax2.legend(loc="upper right", fontsize=7)
    ax3.plot(run.inventory, lw=1.0, color="C5", label="inventory q (lots)")
    ax3.set_ylabel("q (lots)")
    ax3.set_xlabel("feed message")
    pnl = ax3.twinx()
    pnl.plot(run.pnl, lw=1.0, color="C6", label="P&L (ticks x lots)")
    pnl.set_ylabel("P&L (ticks x lots)")
    ax3.legend(loc="upper left", fontsize=7)
    pnl.legend(loc="lower left", fontsize=7)
    start = 0
    for i, name in enumerate(dict.fromkeys(phases)):
        end = int(np.nonzero(phases == name)[0][-1]) + 1
        for ax in (ax1, ax2, ax3):
            ax.axvspan(start, end, color=f"C{i}", alpha=0.06)
        ax1.text((start + end) / 2, ax1.get_ylim()[1], name, ha="center", va="bottom",
                 fontsize=8)
        start = end
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
