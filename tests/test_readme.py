"""The README's presets table is the one `gpgrl presets` prints, and the test command CI runs is in it."""

from pathlib import Path

from gpgrl.algos.presets import presets_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_presets_table_matches_registry():
    text = (ROOT / "README.md").read_text()
    start, end = "<!-- presets-table:start -->\n", "\n<!-- presets-table:end -->"
    table = text[text.index(start) + len(start): text.index(end)]
    assert table.strip() == presets_table().strip(), "regenerate the README table with `gpgrl presets`"


def test_readme_starts_with_the_two_setup_commands_and_ci_runs_the_test_one():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1: lines.index("```")]
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The "From Python" example, run as it is (from a scratch directory with the recipes beside it)."""
    import shutil

    text = (ROOT / "README.md").read_text()
    start, end = "<!-- python-example:start -->\n```python\n", "```\n<!-- python-example:end -->"
    code = text[text.index(start) + len(start): text.index(end)]
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md (From Python)", "exec"), scope)  # noqa: S102 - the documented example
    assert scope["result"].summary["steps"] == 2 and scope["held_out"].n == 6
    assert (tmp_path / "runs" / "api-demo" / "final" / "README.md").is_file()
