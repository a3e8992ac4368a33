"""Every tools/ command the README shows still parses: hydra commands (train, simulate, test) compose against
configs/ and pass their tool's own checks; argparse commands are accepted by their tool's parser. A renamed
option, a removed config key or a deleted recipe fails here instead of in a reader's terminal.

A placeholder (`<time>`, `<the ST-RFD run>`) drops a hydra argument that holds it (init_from= must name a real
checkpoint) and stands for any path in an argparse one. Nothing is trained, simulated or read."""
from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python3? tools/(\w+)\.py\b(.*)")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(tool, argv) of each `python tools/X.py ...` line of the README's bash blocks and inline code spans."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += [span.replace("\n", " ") for span in re.findall(r"`([^`]*tools/[^`]*)`", prose)]
    commands = []
    for line in lines:
        match = COMMAND.search(line.split("  #")[0])
        if match:
            args = re.sub(r"<[^>]*>", "<>", match.group(2).split(" | ")[0].split(" && ")[0])
            commands.append((match.group(1), shlex.split(args)))
    return commands


COMMANDS = readme_commands()


def tool_module(name: str):
    spec = importlib.util.spec_from_file_location(f"readme_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def composed(config: str, argv: list[str]):
    overrides = [a for a in argv if not a.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose(config_name=config, overrides=overrides)


def test_the_readme_shows_commands_of_every_kind():
    tools = {tool for tool, _ in COMMANDS}
    assert {"train", "simulate", "test", "create_data", "infer", "bench", "track"} <= tools
    assert sum(tool == "train" for tool, _ in COMMANDS) >= 20


def ids(kind: str) -> list:
    """The hydra commands of tools/<kind>.py, placeholder arguments dropped."""
    argvs = [[a for a in argv if "<>" not in a] for tool, argv in COMMANDS if tool == kind]
    return [pytest.param(argv, id=" ".join(argv)[:80]) for argv in argvs]


@pytest.mark.parametrize("argv", ids("train"))
def test_train_commands_compose_and_pass_the_config_check(argv):
    assert tool_module("train").precheck(argv) == 0


@pytest.mark.parametrize("argv", ids("simulate"))
def test_simulate_commands_compose_and_pass_the_settings_check(monkeypatch, argv):
    simulate = tool_module("simulate")
    if argv and argv[0] == "--compare":  # its argparse form: a real cloud against the simulator
        parses(monkeypatch, simulate.compare, argv)
    else:
        simulate.check_settings(composed("simulate", argv))


@pytest.mark.parametrize("argv", ids("test"))
def test_test_commands_compose_and_pass_the_settings_check(argv):
    tool_module("test").check_settings(composed("test", argv))


class Parsed(Exception):
    pass


def parses(monkeypatch, main, argv: list[str]) -> None:
    """main(argv) stops right after its parser accepted argv; a rejected argv exits 2 (argparse's usage error)."""
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed):
        main([a.replace("<>", "placeholder") for a in argv])


ARGPARSE_TOOLS = sorted({tool for tool, _ in COMMANDS} - {"train", "simulate", "test"})


@pytest.mark.parametrize(("tool", "argv"), [pytest.param(tool, argv, id=f"{tool} {' '.join(argv)}"[:80])
                                            for tool, argv in COMMANDS if tool in ARGPARSE_TOOLS])
def test_argparse_commands_are_accepted(monkeypatch, tool, argv):
    parses(monkeypatch, tool_module(tool).main, argv)


def test_the_readme_links_name_its_headings():
    """Each in-page link (`[...](#anchor)`) leads to a heading, anchors made as GitHub makes them: lower case,
    punctuation other than hyphens dropped, spaces to hyphens."""
    text = (ROOT / "README.md").read_text()
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) >= 10 and set(links) <= anchors, sorted(set(links) - anchors)
