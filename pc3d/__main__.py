"""`python -m pc3d` (or the `pc3d` command):

    python -m pc3d info                               the environment report
    python -m pc3d convert-checkpoint SRC DST         rewrite a TRUSTED pickled checkpoint as a weights-only one

A pc3d error prints one line, ``pc3d: error: ...``, and exits 2 (PC3D_DEBUG=1: the traceback); bad arguments
get argparse's usage line and exit 2.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pc3d", description="pc3d utilities")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{info,convert-checkpoint}")
    commands.add_parser("info", help="library versions, threads and the sparse backends of each device")
    convert = commands.add_parser(
        "convert-checkpoint", help="rewrite a trusted pickled checkpoint as one torch.load(weights_only=True) reads",
        description="Unpickles SRC with torch.load(weights_only=False) -- this runs any code the file holds, so "
                    "only convert files you trust -- and writes DST with only tensors, numbers, strings, lists "
                    "and dicts (what pc3d loads), listing what it left out.")
    convert.add_argument("src", help="the trusted pickled checkpoint")
    convert.add_argument("dst", help="where to write the weights-only checkpoint")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from pc3d.errors import Pc3dError
    from pc3d.utils.cli import user_error

    try:
        if args.command == "info":
            from pc3d.info import environment_report

            print(environment_report())
            return 0
        from pc3d.engine.checkpoint import convert_checkpoint

        dropped = convert_checkpoint(args.src, args.dst)
        print(f"wrote {args.dst}" + (f"; left out {len(dropped)} object(s) that are not weights: "
                                     f"{', '.join(dropped[:10])}" if dropped else ""))
        return 0
    except Pc3dError as error:
        return user_error("pc3d", error)


if __name__ == "__main__":
    sys.exit(main())
