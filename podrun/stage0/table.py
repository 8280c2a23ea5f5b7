"""Plain-text tables for list commands (rkt's look: tab-aligned columns, a legend line)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *,
                legend: bool = True) -> None:
    data = [list(headers)] if legend else []
    data += [list(map(str, r)) for r in rows]
    if not data:
        return
    widths = [max(len(r[i]) for r in data) for i in range(len(data[0]))]
    out = sys.stdout
    for r in data:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=None, sort_keys=False)
    sys.stdout.write("\n")
