"""Write a simulated dataset in the official layout of a real one, or print the realism report.

    python tools/simulate.py format=kitti frames=200 seed=0 out=data/sim_kitti
    python tools/simulate.py --compare ../shared/samples/kitti/000008.bin [--frames 10] [--seed 0]

The first form is a hydra app (configs/simulate.yaml); the same seed gives byte-identical files. A setting
of the wrong type (frames=abc) or an unreadable --compare file prints one line and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pc3d.errors import DataFormatError  # noqa: E402


def compare(argv: list[str]) -> int:
    from pc3d.sim.realism import compare as realism_table

    parser = argparse.ArgumentParser(description="realism table: simulated KITTI-preset frames vs a real frame")
    parser.add_argument("--compare", type=Path, required=True, help="a real KITTI velodyne .bin (float32 N x 4)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames must be >= 1, got {args.frames}")
    from pc3d.data.io import read_bin
    from pc3d.errors import Pc3dError
    from pc3d.utils.cli import user_error

    try:
        if args.compare.is_dir():
            raise DataFormatError(args.compare, "is a folder, expected a KITTI velodyne .bin file")
        real = read_bin(args.compare, 4)
        if len(real) == 0:
            raise DataFormatError(args.compare, "the cloud is empty (0 points)")
    except Pc3dError as error:
        return user_error("simulate", error)
    print(realism_table(real, frames=args.frames, seed=args.seed))
    return 0


def check_settings(cfg) -> None:
    """ConfigError naming a simulate.yaml setting of the wrong type (before anything is written)."""
    from pc3d.errors import ConfigError

    def number(key: str, kind: type, optional: bool = False) -> None:
        value = cfg[key]
        ok = (value is None and optional) or (isinstance(value, kind) and not isinstance(value, bool)) or (
            kind is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{key}: expected {'an integer' if kind is int else 'a number'}"
                              f"{' or null' if optional else ''}, got {value!r} ({type(value).__name__})")

    number("frames", int)
    number("seed", int)
    number("columns", int, optional=True)
    number("sequence_length", int, optional=True)
    number("density", float)
    number("moving_density", float, optional=True)
    number("groups", float)
    number("stops", int)
    number("standing", float)
    number("scan_interval", float)
    if not isinstance(cfg.zones, bool):
        raise ConfigError(f"zones: expected true or false, got {cfg.zones!r}")
    if not isinstance(cfg.distortion, bool):
        raise ConfigError(f"distortion: expected true or false, got {cfg.distortion!r}")
    if not isinstance(cfg.format, str) or not isinstance(cfg.out, str):
        raise ConfigError(f"format and out must be strings, got format={cfg.format!r}, out={cfg.out!r}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a folder")


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
            check_settings(cfg)
            with Progress(total=int(cfg.frames), desc=f"simulate {cfg.format}", unit="frame") as bar:
                out = simulate_dataset(cfg.format, cfg.out, frames=int(cfg.frames), seed=int(cfg.seed),
                                       sensor=cfg.sensor, columns=cfg.columns, sequence_length=cfg.sequence_length,
                                       density=float(cfg.density),
                                       moving_density=None if cfg.moving_density is None else float(cfg.moving_density),
                                       stops=int(cfg.stops), standing=float(cfg.standing), zones=bool(cfg.zones),
                                       groups=float(cfg.groups),
                                       scan_interval=float(cfg.scan_interval), distortion=bool(cfg.distortion),
                                       progress=bar.update_to)
        except Pc3dError as error:
            status["code"] = user_error("simulate", error)
            return
        print(f"wrote {cfg.format} to {out}")

    run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(compare(sys.argv[1:]) if any(a.startswith("--compare") for a in sys.argv[1:]) else simulate())
