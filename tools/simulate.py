"""Write a simulated dataset in the official layout of a real one, or print the realism report.

    python tools/simulate.py format=kitti frames=200 seed=0 out=data/sim_kitti
    python tools/simulate.py --compare ../shared/samples/kitti/000008.bin [--frames 10] [--seed 0]

The first form is a hydra app (configs/simulate.yaml); the same seed gives byte-identical files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compare(argv: list[str]) -> int:
    import numpy as np

    from pc3d.sim.realism import compare as realism_table

    parser = argparse.ArgumentParser(description="realism table: simulated KITTI-preset frames vs a real frame")
    parser.add_argument("--compare", type=Path, required=True, help="a real KITTI velodyne .bin (float32 N x 4)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    real = np.fromfile(args.compare, dtype="<f4")
    if real.size % 4:
        print(f"{args.compare}: size is not a multiple of 4 float32 values", file=sys.stderr)
        return 2
    print(realism_table(real.reshape(-1, 4), frames=args.frames, seed=args.seed))
    return 0


def simulate() -> int:
    import hydra
    from omegaconf import DictConfig

    status = {"code": 0}

    @hydra.main(version_base=None, config_path=str(ROOT / "configs"), config_name="simulate")
    def run(cfg: DictConfig) -> None:
        from pc3d.errors import Pc3dError
        from pc3d.sim.api import simulate_dataset
        from pc3d.utils.cli import user_error
        from pc3d.utils.progress import Progress

        try:
            with Progress(total=int(cfg.frames), desc=f"simulate {cfg.format}", unit="frame") as bar:
                out = simulate_dataset(cfg.format, cfg.out, frames=int(cfg.frames), seed=int(cfg.seed),
                                       sensor=cfg.sensor, columns=cfg.columns, sequence_length=cfg.sequence_length,
                                       density=float(cfg.density), distortion=bool(cfg.distortion),
                                       progress=bar.update_to)
        except Pc3dError as error:
            status["code"] = user_error("simulate", error)
            return
        print(f"wrote {cfg.format} to {out}")

    run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(compare(sys.argv[1:]) if any(a.startswith("--compare") for a in sys.argv[1:]) else simulate())
