"""`python -m pc3d info`: the environment report."""
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["info"]:
        print("usage: python -m pc3d info", file=sys.stderr)
        return 2
    from pc3d.info import environment_report

    print(environment_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
