"""``performance.png``: calls/s and p99 by endpoint and connection count, plus the bus path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ORDER = ("toolbus-2026", "sdk-2026", "toolbus-2025", "sdk-2025", "limit")
COLORS = {
    "toolbus-2026": "#1f77b4",
    "sdk-2026": "#aec7e8",
    "toolbus-2025": "#2ca02c",
    "sdk-2025": "#98df8a",
    "limit": "#7f7f7f",
    "toolbus-worker": "#1f77b4",
    "raw-echo": "#7f7f7f",
}


def draw(results: dict[str, Any], path: Path) -> Path | None:
    """Draw the chart (matplotlib, Agg backend); None when there is nothing to draw or no matplotlib."""
    http = results.get("http", {}).get("summary", [])
    bus = results.get("bus", {}).get("summary", [])
    if not http and not bus:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed (pip install -e '.[bench]'); no chart drawn")
        return None

    panels = (2 if http else 0) + (1 if bus else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.8), squeeze=False)
    ax_iter = iter(axes[0])
    if http:
        connections = sorted({row["connections"] for row in http})
        endpoints = [e for e in ORDER if any(row["endpoint"] == e for row in http)]
        by_key = {(row["endpoint"], row["connections"]): row for row in http}
        width = 0.8 / len(endpoints)
        for metric, title, log in (
            ("rps", "HTTP tools/call: calls/s", False),
            ("p99_ms", "HTTP tools/call: p99 (ms)", True),
        ):
            ax = next(ax_iter)
            for i, endpoint in enumerate(endpoints):
                xs = [c_i + (i - (len(endpoints) - 1) / 2) * width for c_i in range(len(connections))]
                values = [by_key.get((endpoint, c), {}).get(metric) or 0 for c in connections]
                ax.bar(xs, values, width, label=endpoint, color=COLORS.get(endpoint))
            ax.set_xticks(range(len(connections)), [f"{c} conn" for c in connections])
            ax.set_title(title)
            if log:
                ax.set_yscale("log")
                ax.axhline(10, color="red", linewidth=0.8, linestyle="--", label="target (16 conn)")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
    if bus:
        ax = next(ax_iter)
        in_flight = sorted({row["in_flight"] for row in bus})
        targets = [t for t in ("toolbus-worker", "raw-echo") if any(row["target"] == t for row in bus)]
        by_key = {(row["target"], row["in_flight"]): row for row in bus}
        width = 0.8 / len(targets)
        for i, target in enumerate(targets):
            xs = [n_i + (i - (len(targets) - 1) / 2) * width for n_i in range(len(in_flight))]
            values = [by_key.get((target, n), {}).get("rps") or 0 for n in in_flight]
            ax.bar(xs, values, width, label=target, color=COLORS.get(target))
        ax.set_xticks(range(len(in_flight)), [f"{n} in flight" for n in in_flight])
        ax.set_title("Direct bus path: calls/s")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"toolbus bench, {results['machine']['date'][:10]}, {results['machine']['cpu_count']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
