"""tools/probe_bad_input.py's in-process areas as a test: every hostile-input case of the loaders, the inference
readers and writers, checkpoints and the engine ends in a named pc3d error, a counted warning or a valid result.
(The `tools` area runs each case as a subprocess, ~2 minutes: a developer's run, not CI's.) A KITTI model over a
Waymo segment once ended in an error writing objects.bin; only this probe saw it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_probe_case_outside_the_tools_area_is_handled(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "probe_bad_input.py"), "--only",
                           "loaders,inference,checkpoints,engine", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    cases = json.loads((tmp_path / "probe.json").read_text())["cases"]
    failed = [f"{c['case']}: {c['outcome']}: {c['message']}" for c in cases if not c["outcome"].startswith("OK")]
    assert not failed, "\n".join(failed)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {c["area"] for c in cases} == {"loaders", "inference", "checkpoints", "engine"} and len(cases) > 200
