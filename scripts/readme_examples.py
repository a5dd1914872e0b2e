"""Regenerate the README's example outputs: each fenced block that starts
with a `$ optimize ...` line is replaced by that command's output now, and
the block under "### Knobs" by the registry's glossary (what `optimize plan
--help` prints).

    python scripts/readme_examples.py [--check]

--check exits 1 when a block differs (times in the proof line aside)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```\n\$ (optimize [^\n]*)\n(.*?)```", re.S)
TIMES = re.compile(r"\d+\.\d+ s\b")
KNOBS = re.compile(r"(### Knobs\n.*?```\n)(.*?)(```)", re.S)


def run(command: str) -> str:
    argv = [sys.executable, "-m", "optimizer.cli", *shlex.split(command)[1:]]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True).stdout


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    changed = False

    def fresh(m):
        nonlocal changed
        out = run(m.group(1))
        changed |= TIMES.sub("", out) != TIMES.sub("", m.group(2))
        return f"```\n$ {m.group(1)}\n{out}```"

    new = BLOCK.sub(fresh, text)
    sys.path.insert(0, str(ROOT))
    from optimizer.knobs import glossary
    glossary_now = glossary() + "\n"
    old_knobs = KNOBS.search(new)
    changed |= old_knobs is None or old_knobs.group(2) != glossary_now
    new = KNOBS.sub(lambda m: m.group(1) + glossary_now + m.group(3), new)
    if "--check" in sys.argv:
        return 1 if changed else 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
