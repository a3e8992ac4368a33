"""Build a dataset's derived files (info indexes, GT database) beside it: JSON / npz / raw float32, never pickle.

    python tools/create_data.py kitti data/sim_kitti
    python tools/create_data.py waymo data/waymo_v2
    python tools/create_data.py waymo data/waymo_v2 --sweeps 2   # the GT database of two-sweep frames
    python tools/create_data.py {semantickitti,scannet,sceneflow} <root>

Bad frames are skipped, counted and listed at the end (and in the info files under "skipped"), as are
usable oddities such as empty scans ("notes"). A root holding nothing to index exits 2 with one line.
Progress: a bar per split on a terminal, a line every few seconds otherwise (pc3d.utils.progress).
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from pc3d.data.create import CREATORS, create_data
    from pc3d.errors import Pc3dError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(CREATORS))
    parser.add_argument("root", help="the dataset folder, in its official layout")
    parser.add_argument("--sweeps", type=int, default=1,
                        help="waymo: the GT database of frames of this many sweeps (waymo_<N>sweeps_gt_database_*), "
                             "for recipes with dataset.n_past_scans = N - 1")
    args = parser.parse_args(argv)

    try:
        report = create_data(args.dataset, args.root, args.sweeps)
    except Pc3dError as error:
        from pc3d.utils.cli import user_error

        return user_error("create_data", error)
    for split, entry in report.items():
        if not isinstance(entry, dict):
            continue
        if entry.get("skipped"):
            print(f"{split}: skipped {len(entry['skipped'])} bad frame(s):", file=sys.stderr)
            for frame, problem in entry["skipped"].items():
                print(f"  {frame}: {problem}", file=sys.stderr)
        for kind, where in (entry.get("notes") or {}).items():
            print(f"{split}: {kind}: {len(where)}", file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
