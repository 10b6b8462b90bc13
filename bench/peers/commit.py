"""The commit a peer run's results belong to (shared by the peer scripts; no torch import)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def git_commit():
    """.commit where a device run carried one (the device copy's git metadata names another
    commit), else $KILN_COMMIT, else git's HEAD (with -dirty)."""
    carried = REPO / ".commit"
    if carried.is_file() and carried.read_text().strip():
        return carried.read_text().strip()
    if os.environ.get("KILN_COMMIT"):
        return os.environ["KILN_COMMIT"]
    try:
        c = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        d = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True, timeout=20)
        return (c.stdout.strip() or "unknown") + ("-dirty" if d.stdout.strip() else "")
    except Exception:  # noqa: BLE001
        return "unknown"
