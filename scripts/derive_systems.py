"""The newer GPUs' efficiency numbers from the calibrated H100, by one rule.

    python scripts/derive_systems.py          # rewrites systems/{h200,b200,gb200}*.yaml in place

No published runs exist to fit H200, B200 or GB200 on, so each takes the
calibrated H100 file (systems/h100-80g-nvl8.yaml) and:

- the matrix curve with operation sizes scaled by the bf16 peak ratio (the
  same fixed time per operation, on a faster engine);
- the vector and HBM efficiency curves unchanged;
- each network tier's efficiency and processor share from the H100's tier of
  the same position (NVLink, scale-out), its size, bandwidth and latency
  from the GPU's own data sheet (kept from its file).

Only those lines of each file are rewritten; its comments and data-sheet
numbers stay. Run it after recalibrating the H100.
"""

from __future__ import annotations

import re
from pathlib import Path

from optimizer.spec import load_system

ROOT = Path(__file__).resolve().parent.parent
DERIVED = ("h200-141g-nvl8", "b200-180g-nvl8", "gb200-186g-nvl72")


def _points(curve) -> str:
    return "[" + ", ".join(f"[{x:.6g}, {e:.6g}]" for x, e in curve) + "]"


def _replace_block(text: str, key: str, value: str, indent: str = "") -> str:
    """Replace `key:` (a one-line flow list or a block list below it) by `key: value`."""
    pattern = re.compile(rf"^{indent}{key}:.*\n(?:{indent}- .*\n|{indent}  - .*\n)*", re.M)
    new, n = pattern.subn(f"{indent}{key}: {value}\n", text, count=1)
    if n != 1:
        raise SystemExit(f"{key} not found")
    return new


def derive(name: str, h100) -> str:
    path = ROOT / "systems" / f"{name}.yaml"
    text = path.read_text()
    own = load_system(str(path))
    ratio = own.matrix_tflops["bf16"] / h100.matrix_tflops["bf16"]
    text = _replace_block(text, "matrix_efficiency", _points((x * ratio, e) for x, e in h100.matrix_efficiency))
    text = _replace_block(text, "vector_efficiency", _points(h100.vector_efficiency))
    text = _replace_block(text, "efficiency", _points(h100.hbm_efficiency), indent="  ")
    # network tiers, in order: efficiency and processor share from the H100's
    tiers = iter(range(len(own.networks)))
    out = []
    current = None
    for line in text.splitlines(keepends=True):
        if re.match(r"^  - name:", line):
            current = min(next(tiers), len(h100.networks) - 1)
        if current is not None:
            line = re.sub(r"^(    efficiency: )\S+", lambda m: m.group(1) + f"{h100.networks[current].efficiency:.6g}", line)
            line = re.sub(r"^(    processor_share: )\S+",
                          lambda m: m.group(1) + f"{h100.networks[current].processor_share:.6g}", line)
        out.append(line)
    path.write_text("".join(out))
    load_system(str(path))                              # still a valid system file
    return f"{name}: matrix sizes x {ratio:.4g}"


def main():
    h100 = load_system(str(ROOT / "systems" / "h100-80g-nvl8.yaml"))
    for name in DERIVED:
        print(derive(name, h100))


if __name__ == "__main__":
    main()
