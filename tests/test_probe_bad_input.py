"""tools/probe_bad_input.py as a test: every hostile-input case of the loaders, the tools (each a subprocess of
tools/*.py or `python -m pc3d`, two at a time), the inference readers and writers, checkpoints and the engine ends
in a named pc3d error, a counted warning or a valid result; about 80 s. A KITTI model over a Waymo segment once
ended in an error writing objects.bin; only this probe saw it."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_probe_case_is_handled(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "probe_bad_input.py"), "--jobs", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    cases = json.loads((tmp_path / "probe.json").read_text())["cases"]
    failed = [f"{c['case']}: {c['outcome']}: {c['message']}" for c in cases if not c["outcome"].startswith("OK")]
    assert not failed, "\n".join(failed)
    assert proc.returncode == 0, proc.stderr[-2000:]
    per_area = Counter(c["area"] for c in cases)
    assert set(per_area) == {"loaders", "tools", "inference", "checkpoints", "engine"}, per_area
    assert len(cases) > 250 and per_area["tools"] > 50, per_area
