"""Every command shown in README.md and docs/*.md is checked, so the documentation cannot drift from the code.

Each shell line of a ``bash``/``sh``/``shell``/``console`` block is split into commands (``&&``, ``;``, ``|``; ``\\``
continuations joined; ``VAR=value`` prefixes and redirections dropped) and dispatched on its program:

* ``holderpo SUB ...``: the arguments must parse (the sub-command's own argparse parser, stopped right after
  parsing), and then ``recipe check`` runs for real, ``train`` / ``schedule`` load and validate their
  recipe with the overrides, ``eval`` resolves its settings (``--print-config``);
* ``python -m holder_nemo.nemo_rl.run_grpo --config R [overrides]`` and ``sbatch slurm/X.sh [overrides]``: the recipe
  (for sbatch, the entry's default recipe) with those overrides passes ``holderpo recipe check``;
* ``python -m holder_nemo.<module>``: the module's arguments parse; ``python -m pytest PATHS``: the paths exist;
* ``pip install``: every extra named exists in pyproject.toml; ``docker build``: the Dockerfile exists and declares
  every ``--build-arg``; a ``holderpo`` command nested in ``docker run`` / ``srun`` / ``apptainer`` / ``time`` is
  checked as above (``/opt/holder_nemo`` is the repository inside the image);
* environment commands (``git``, ``cd``, ``export``, ``enroot``, NeMo RL's ``uv run ...``): the repository paths they
  name exist. A line that is only ``key=value`` overrides must be a verl override list (checked against
  ``holder_nemo.verl``). Any other program fails the test until a checker is added here.

A synopsis line (``[overrides...]``, ``<placeholder>``, ``[--flag]``) only needs a known program and sub-command.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|", "&", ";;"}
IN_IMAGE = ("/opt/holder_nemo/", "/work/holder_nemo/", "/workspace/holder_nemo/")
REPO_DIRS = ("recipes/", "slurm/", "containers/", "docs/", "holder_nemo/", "tests/", "benchmarks/", ".ci/")
FRAMEWORK_MODULES = {"verl", "trl", "nemo_rl", "vllm"}
ENVIRONMENT = {"cd", "export", "git", "ls", "cat", "mkdir", "wait", "for", "do", "done", "then", "fi", "enroot",
               "scancel", "squeue", "scontrol", "sacct", "tail", "nvidia-smi", "apptainer", "srun", "uv",
               # docs/containers.md: building enroot and pyxis from their sources (outside the repository)
               "apt-get", "make", "install", "cp", "printf", "tar"}  # fmt: skip
SYNOPSIS = re.compile(r"\[[a-z-]*\.\.\.\]|\[--|\[overrides|<[A-Za-z_ .-]+>|\.\.\.\]|(^|\s)\.\.\.(\s|$)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"\[?[A-Z][A-Z0-9_]+(\.[a-z]+)?\]?")  # RECIPE, [RECIPE], MODEL_DIR, RECIPE.yaml


@dataclass
class Command:
    doc: str
    line: int
    text: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    inline: bool = False

    @property
    def synopsis(self) -> bool:
        """A usage line (``[overrides...]``, ``<dir>``, ``RECIPE``), or an inline mention of a command's name."""
        if SYNOPSIS.search(self.text) or any(PLACEHOLDER.fullmatch(t) for t in self.argv):
            return True
        return self.inline and all(re.fullmatch(r"[a-z][a-z-]*", t) for t in self.argv[1:])

    @property
    def has_variables(self) -> bool:
        """Shell variables in the arguments: their values are only known at run time."""
        return any("$" in token for token in self.argv)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {' '.join(self.argv)}"


REDIRECTION = re.compile(r"\s\d*>&\d+|\s\d*(?:>>?|<)\s*[^\s;&|]+")
CONTROL_WORDS = {"do", "then", "else", "time"}


def _segments(text: str) -> list[tuple[list[str], dict[str, str]]]:
    text = REDIRECTION.sub(" ", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments, current = [], []
    for token in [*lexer, ";"]:
        if token in OPERATORS:
            if current:
                segments.append(current)
            current = []
        else:
            current.append(token)
    out = []
    for argv in segments:
        while argv and argv[0] in CONTROL_WORDS:
            argv = argv[1:]
        env = {}
        while argv and ENV_ASSIGNMENT.match(argv[0]) and not argv[0].split("=", 1)[0].count("."):
            key, _, value = argv.pop(0).partition("=")
            env[key] = value
        if argv:
            out.append((argv, env))
    return out


INLINE_COMMAND = re.compile(r"`((?:holderpo|sbatch|python3? -m|\.venv[\w-]*/bin/\w+|pip install) [^`\n]+)`")


def _commands_of_line(doc: Path, line: int, text: str, inline: bool = False) -> list[Command]:
    name = doc.relative_to(REPO).as_posix()
    if SYNOPSIS.search(text):  # a usage line: its brackets and bars are not shell syntax
        return [Command(name, line, text, text.split(), inline=inline)]
    return [Command(name, line, text, argv, env, inline) for argv, env in _segments(text)]


def documented_commands() -> list[Command]:
    """Every shell command of the fenced shell blocks, and every inline code span that starts with a command."""
    commands = []
    for doc in DOCS:
        text = doc.read_text()
        for match in INLINE_COMMAND.finditer(_without_blocks(text)):
            line = text[: match.start()].count("\n") + 1
            commands += _commands_of_line(doc, line, match.group(1), inline=True)
        for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
            if block.group(1) not in SHELL_LANGUAGES:
                continue
            first_line = text[: block.start(2)].count("\n") + 1
            logical, start = "", first_line
            for offset, raw in enumerate(block.group(2).splitlines()):
                if not logical:
                    start = first_line + offset
                if raw.rstrip().endswith("\\"):
                    logical += raw.rstrip()[:-1] + " "
                    continue
                logical += raw
                stripped = logical.strip().removeprefix("$ ")
                logical = ""
                if not stripped or stripped.startswith("#"):
                    continue
                commands += _commands_of_line(doc, start, stripped)
    return commands


def _without_blocks(text: str) -> str:
    """``text`` with fenced blocks blanked (same length, so offsets and line numbers stay right)."""
    return re.sub(r"^```.*?^```", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S | re.M)


COMMANDS = documented_commands()


def _repo_path(token: str) -> Path | None:
    """A repository path named by ``token`` (relative, or inside the image), else None."""
    for prefix in IN_IMAGE:
        if token.startswith(prefix):
            return REPO / token[len(prefix) :]
    if token.startswith(REPO_DIRS) and "$" not in token and "*" not in token:
        return REPO / token
    return None


def assert_repo_paths_exist(cmd: Command) -> None:
    for token in cmd.argv:
        for part in token.split("="):  # key=path overrides and --flag=path
            path = _repo_path(part.split(":")[0])
            if path is not None:
                assert path.exists(), f"{cmd}: {part} does not exist in the repository"


class _Parsed(Exception):
    pass


def options_of(main, argv: list[str], monkeypatch) -> set[str]:
    """Every option string of the argparse parser(s) ``main(argv)`` builds (sub-parsers included)."""
    found: list[argparse.ArgumentParser] = []

    def capture(self, args=None, namespace=None):
        found.append(self)
        raise _Parsed

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        with contextlib.suppress(_Parsed):
            main(argv)
    options: set[str] = set()
    pending = list(found)
    while pending:
        parser = pending.pop()
        options |= set(parser._option_string_actions)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += list(action.choices.values())
    assert found, f"{main} builds no argument parser"
    return options


def assert_mentioned_options_exist(cmd: Command, main, argv: list[str], monkeypatch) -> None:
    options = options_of(main, argv[:1], monkeypatch)
    for token in argv:
        if token.startswith("--"):
            assert token.split("=")[0] in options, f"{cmd}: no option {token.split('=')[0]} (has {sorted(options)})"


def assert_parses(cmd: Command, main, argv: list[str], monkeypatch) -> None:
    """``main(argv)`` gets past its argparse parser (stopped there: nothing is run)."""
    original_parse, original_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args

    def parse_args(self, args=None, namespace=None):
        namespace, extras = original_known(self, args, namespace)
        if extras and not self._subparsers:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        raise _Parsed

    def parse_known_args(self, args=None, namespace=None):
        original_known(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
    try:
        main(argv)
    except _Parsed:
        return
    except SystemExit as exc:
        if exc.code == 0 and ("--help" in argv or "-h" in argv):
            return
        pytest.fail(f"{cmd}: rejected by its argument parser (exit {exc.code})")
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", original_parse)
        monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", original_known)
    pytest.fail(f"{cmd}: never reached an argument parser")


def _in_repo(token: str) -> str:
    path = _repo_path(token)
    return str(path) if path is not None else token


def assert_recipe_check_passes(cmd: Command, recipe: str, overrides: list[str], capsys) -> None:
    """As on the machine the command is meant for: the data the recipes name is there (``--strict`` checks it)."""
    import tempfile

    from holder_nemo.recipe_check.cli import main as recipe_main

    with tempfile.TemporaryDirectory() as data, pytest.MonkeyPatch.context() as patch:
        for name in ("math_lvl3to5.jsonl", "math500.jsonl"):
            (Path(data) / name).write_text("{}\n")
        for split in ("train", "valid_seen"):
            (Path(data) / "alfworld" / "json_2.1.1" / split).mkdir(parents=True)
        patch.setenv("HOLDERPO_DATA_DIR", data)
        patch.setenv("ALFWORLD_DATA", str(Path(data) / "alfworld"))
        code = recipe_main(["check", _in_repo(recipe), *overrides, "--no-config"])
    err = capsys.readouterr().err
    assert code == 0, f"{cmd}: `holderpo recipe check` refuses it:\n{err}"


def check_holderpo(cmd: Command, argv: list[str], monkeypatch, capsys) -> None:
    from holder_nemo.cli import COMMANDS as SUBCOMMANDS
    from holder_nemo.cli import main as holderpo

    assert argv and argv[0] in SUBCOMMANDS, f"{cmd}: unknown holderpo command {argv[:1]}"
    if cmd.synopsis or cmd.inline:
        assert_mentioned_options_exist(cmd, holderpo, argv, monkeypatch)
        return
    sub, rest = argv[0], [_in_repo(t) for t in argv[1:]]
    assert_parses(cmd, holderpo, [sub, *rest], monkeypatch)
    if cmd.has_variables:
        return
    if sub == "recipe" and rest[:1] == ["check"]:
        assert_recipe_check_passes(cmd, rest[1], rest[2:], capsys)  # its own parser splits options from overrides
    elif sub in ("train", "schedule"):
        from holder_nemo.config import ConfigError
        from holder_nemo.reference.train import load_config, parse_args

        ns = parse_args([t for t in rest if not t.startswith("--")])
        try:
            load_config(ns.recipe, ns.overrides, paths=False)  # the model and data of the docs are not on this machine
        except ConfigError as exc:
            pytest.fail(f"{cmd}: the recipe or its overrides are invalid: {exc}")
    elif sub == "eval":
        code = holderpo([sub, *rest, "--print-config"])
        assert code == 0, f"{cmd}: `holderpo eval --print-config` refuses it:\n{capsys.readouterr().err}"
    elif sub == "study":  # --dry-run validates every run's recipe and runs nothing
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out = ["--out-dir", tmp] if "--out-dir" not in rest else []
            code = holderpo([sub, *rest, *out, "--dry-run"])
        assert code == 0, f"{cmd}: `holderpo study --dry-run` refuses it:\n{capsys.readouterr().err}"


def check_python(cmd: Command, argv: list[str], monkeypatch, capsys) -> None:
    if argv[:2] == ["-m", "venv"] or argv[:1] == ["-c"]:
        return
    assert argv[:1] == ["-m"], f"{cmd}: only `python -m MODULE` commands are documented"
    module, rest = argv[1], argv[2:]
    if module == "pytest":
        takes_value = {"-m", "-k", "-p", "-n", "--timeout"}
        for previous, token in zip(["", *rest], rest, strict=False):
            if previous not in takes_value and not token.startswith("-") and "=" not in token:
                assert (REPO / token.split("::")[0]).exists(), f"{cmd}: test path {token} does not exist"
        return
    if module == "pip":
        check_pip(cmd, rest)
        return
    if module.split(".")[0] in FRAMEWORK_MODULES:  # another project's entry point, named in prose
        return
    assert module.startswith("holder_nemo"), f"{cmd}: no checker for `python -m {module}`"
    import importlib

    imported = importlib.import_module(module)
    if not hasattr(imported, "main"):  # a package run through its __main__, which calls its cli module
        imported = importlib.import_module(f"{module}.cli")
    if cmd.synopsis or cmd.inline:
        if rest:
            assert_mentioned_options_exist(cmd, imported.main, rest, monkeypatch)
        return
    if cmd.has_variables:
        return
    if module == "holder_nemo.nemo_rl.run_grpo":
        recipe = rest[rest.index("--config") + 1]
        overrides = [t for t in rest if "=" in t and not t.startswith("--")]
        assert_recipe_check_passes(cmd, recipe, overrides, capsys)
        return
    assert_parses(cmd, imported.main, [_in_repo(t) for t in rest], monkeypatch)


def check_pip(cmd: Command, argv: list[str]) -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for token in argv:
        match = re.fullmatch(r"\.\[([\w,-]+)\]", token)
        if match:
            for extra in match.group(1).split(","):
                assert extra in extras, f"{cmd}: pyproject.toml has no extra {extra!r}"


def check_sbatch(cmd: Command, argv: list[str], capsys) -> None:
    scripts = [t for t in argv if t.endswith(".sh")]
    if not scripts and (cmd.inline or cmd.synopsis):
        return  # sbatch's own flags, named in prose
    assert len(scripts) == 1, f"{cmd}: expected one sbatch script"
    script = REPO / scripts[0]
    assert script.is_file(), f"{cmd}: {scripts[0]} does not exist"
    overrides = argv[argv.index(scripts[0]) + 1 :]
    if cmd.synopsis or cmd.has_variables or not overrides:
        return
    entry = script.read_text()
    match = re.search(r"^hp_run_nemo_rl ([\w.-]+\.yaml)", entry, re.M) or re.search(
        r"HOLDERPO_RECIPE:-\$HOLDERPO_HOME/recipes/([\w.-]+\.yaml)", entry
    )
    assert match, f"{cmd}: cannot find the recipe of {scripts[0]}"
    assert_recipe_check_passes(cmd, f"recipes/{match.group(1)}", overrides, capsys)


def check_docker(cmd: Command, argv: list[str], monkeypatch, capsys) -> None:
    if argv[0] == "build":
        dockerfile = REPO / argv[argv.index("-f") + 1]
        assert dockerfile.is_file(), f"{cmd}: {dockerfile} does not exist"
        declared = set(re.findall(r"^ARG\s+(\w+)", dockerfile.read_text(), re.M))
        for i, token in enumerate(argv):
            if token == "--build-arg":
                name = argv[i + 1].split("=")[0]
                assert name in declared, f"{cmd}: {dockerfile.name} declares no ARG {name}"
    check_nested(cmd, argv, monkeypatch, capsys)


def check_nested(cmd: Command, argv: list[str], monkeypatch, capsys) -> None:
    """A holderpo / python command run inside a container or wrapper."""
    for i, token in enumerate(argv):
        name = Path(token).name
        if name == "holderpo":
            check_holderpo(cmd, argv[i + 1 :], monkeypatch, capsys)
            return
        if name in ("python", "python3", "python3.11") and argv[i + 1 : i + 2] == ["-m"]:
            check_python(cmd, argv[i + 1 :], monkeypatch, capsys)
            return
    assert_repo_paths_exist(cmd)


def check_verl_overrides(cmd: Command) -> None:
    """A verl override list: ``policy_loss._target_`` is importable and every ``+...`` key is one of its fields."""
    import dataclasses
    import importlib

    overrides = dict(t.lstrip("+").split("=", 1) for t in cmd.argv)
    target = overrides.get("actor_rollout_ref.actor.policy_loss._target_")
    assert target, f"{cmd}: a bare override list must be a verl one (policy_loss._target_)"
    module, _, name = target.rpartition(".")
    # a submodule: with tests/ on sys.path a bare `verl` would be the tests/verl folder
    pytest.importorskip("verl.trainer.ppo.core_algos", reason="the verl extra (holder_nemo[verl]) is not installed")
    cls = getattr(importlib.import_module(module), name)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in overrides:
        leaf = key.rsplit(".", 1)[-1]
        if key.startswith("actor_rollout_ref.actor.policy_loss.") and leaf != "_target_":
            assert leaf in fields, f"{cmd}: {target} has no field {leaf}"


def test_the_documentation_shows_commands():
    docs = {c.doc for c in COMMANDS}
    assert {"README.md", "docs/recipes.md", "docs/slurm.md", "docs/eval.md"} <= docs
    assert len(COMMANDS) >= 60


def test_docs_document_the_baselines():
    runs = [c.text for c in COMMANDS if "holder_nemo.nemo_rl.run_grpo" in c.text and not c.synopsis]
    assert any("clip_mode=token " in c and "p_max=1.0" in c for c in runs)  # GRPO
    assert any("ratio_clip_min=3e-4" in c and "p_max=0.0" in c for c in runs)  # GSPO
    assert any("clip_mode=token_log" in c and "ratio_clip_min=0.4" in c for c in runs)  # GMPO


def test_docs_document_the_study_and_the_smollm2_recipe():
    runs = [[Path(c.argv[0]).name, *c.argv[1:]] for c in COMMANDS if not (c.synopsis or c.inline)]
    assert ["holderpo", "study"] in runs  # the default study
    assert any(r[:3] == ["holderpo", "train", "recipes/smollm2_135m_arith_cpu.yaml"] for r in runs)
    assert any(r[:2] == ["holderpo", "convert-smollm2"] for r in runs)


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_documented_command(cmd, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    program, argv = Path(cmd.argv[0]).name, cmd.argv[1:]
    if program == "holderpo":
        check_holderpo(cmd, argv, monkeypatch, capsys)
    elif re.fullmatch(r"python(3(\.\d+)?)?", program):
        check_python(cmd, argv, monkeypatch, capsys)
    elif program == "pip":
        check_pip(cmd, argv)
    elif program == "sbatch":
        check_sbatch(cmd, argv, capsys)
    elif program == "docker":
        check_docker(cmd, argv, monkeypatch, capsys)
    elif program == "time":
        check_nested(cmd, argv, monkeypatch, capsys)
    elif "=" in cmd.argv[0] and all("=" in t for t in cmd.argv):
        check_verl_overrides(cmd)
    else:
        assert program in ENVIRONMENT, f"{cmd}: no checker for program {program!r}; add one to this test"
        check_nested(cmd, cmd.argv, monkeypatch, capsys)


LINK = re.compile(r"\]\(([^)\s]*?\.md)?(#[^)\s]+)?\)")


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_between_documents_resolve():
    """Every relative link of README.md and docs/*.md names a file that exists and, with ``#anchor``, a heading in it
    (docs/eval.md once pointed to training times docs/recipes.md did not have)."""
    checked = 0
    for doc in DOCS:
        for target, anchor in LINK.findall(_without_blocks(doc.read_text())):
            if not target and not anchor:
                continue
            path = (doc.parent / target).resolve() if target else doc
            assert path.is_file(), f"{doc.relative_to(REPO)}: link to {target} which does not exist"
            if anchor:
                assert anchor[1:] in _anchors(path), f"{doc.relative_to(REPO)}: no heading {anchor} in {path.name}"
            checked += 1
    assert checked >= 10


PAPER_CLIP = 0.2  # CLIPRANGE=0.2 in the authors' scripts/qwen2.5-math-7b-holder.sh (docs/recipes.md, "Clip epsilon")


def test_the_paper_clip_is_one_value_everywhere():
    """One ε for HölderPO: every shipped recipe, the TRL example and the verl overrides use the paper's 0.2, and no
    document calls GSPO's 3e-4 / 4e-4 the paper's (docs/trl.md once did)."""
    from holder_nemo.config import load_recipe

    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        loss = load_recipe(recipe).loss_fn
        assert (loss.ratio_clip_min, loss.ratio_clip_max) == (PAPER_CLIP, PAPER_CLIP), recipe.name
    trl_example = re.search(r"```python\n(.*?)```", (REPO / "docs" / "trl.md").read_text(), re.S).group(1)
    assert "epsilon=0.2, epsilon_high=0.2" in trl_example
    verl = (REPO / "docs" / "verl.md").read_text()
    assert "clip_ratio_low=0.2" in verl and "clip_ratio_high=0.2" in verl
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            assert not re.search(r"paper.{0,40}(3e-4|4e-4)|(3e-4|4e-4).{0,40}the paper", line), f"{doc.name}: {line}"


def test_eval_points_to_the_training_times():
    """docs/eval.md's training-time pointer is a link to a section of docs/recipes.md (checked to exist above)."""
    text = (REPO / "docs" / "eval.md").read_text()
    pointer = re.search(r"Training time per recipe.{0,80}?\]\(recipes\.md#[\w-]+\)", text, re.S)
    assert pointer, "docs/eval.md: the training-time pointer is not a link to a section of recipes.md"
