"""The README and every page of `docs/` run as written.

Each Markdown file runs in its own Python process (so that a page that sets a
mixed-precision policy or op determinism leaves nothing behind), in an empty
temporary folder, with `keras.utils.set_random_seed(0)` first. Its fenced
blocks run in order in one namespace:

- ```python blocks are executed;
- ```pycon blocks (`>>>` prompts and the expected output, `...` matching
  anything) run as doctests.

A page may build on its own earlier blocks, never on another page. The
snippets are cheap by design (the MNIST digits embedded in the package, a few
hundred samples or a few epochs), which keeps this file at about a minute and a
half of CPU time; write new ones the same way. Blocks of other languages (```bash)
are commands: they are not run, but every `python <file>.py` they name must
exist, and the README's test command must be the one `.ci/run` runs.

Run one file by hand: `python tests/test_docs.py README.md`.
"""

from __future__ import annotations

import doctest
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """`(language, code, line of the code's first line)` of each fenced block."""
    return [
        (match[1], match[2], text.count("\n", 0, match.start(2)) + 1)
        for match in _FENCE.finditer(text)
    ]


def run_page(path: pathlib.Path) -> None:
    """Runs the python and pycon blocks of `path` in order (in this process)."""
    import keras

    keras.utils.set_random_seed(0)
    namespace = {"__name__": "__main__"}
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    for language, code, line in code_blocks(path.read_text()):
        if language == "python":
            # Padded so that tracebacks give the line numbers of the page.
            exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
        elif language == "pycon":
            test = doctest.DocTestParser().get_doctest(
                code, namespace, f"{path.name}:{line}", str(path), line - 1
            )
            failed = runner.run(test, clear_globs=False).failed
            namespace.update(test.globs)  # the doctest ran on a copy
            if failed:
                raise AssertionError(f"{path.name}: the pycon block at line {line}")


@pytest.mark.slow  # one process per page: about a minute of CPU in all
@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_page_runs_as_written(page, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The real data (pages that read it, e.g. text.md): an absolute path, the
    # page runs in a temporary folder.
    data = os.environ.get("KERAS_ATTREG_DATA", str(ROOT.parent / "shared" / "data"))
    env["KERAS_ATTREG_DATA"] = str(pathlib.Path(data).resolve())
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, __file__, str(page)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_commands_name_existing_scripts(page):
    blocks = code_blocks(page.read_text())
    # A script the page itself writes: a python block opening with `# name.py`.
    written = {
        match.group(1)
        for language, code, _ in blocks
        if language == "python"
        for match in [re.match(r"# (\S+\.py)\n", code)]
        if match
    }
    for language, code, _ in blocks:
        if language in ("bash", "sh", "console"):
            for script in re.findall(r"python3? (\S+\.py)\b", code):
                assert script in written or (ROOT / script).is_file(), (
                    f"{page.name}: {script}"
                )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_linked_figures_and_pages_exist(page):
    """Every image and relative link of the page points to a file of the repo
    (anchors and web addresses aside), checked against the file system."""
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#")[0]
        if not path or re.match(r"[a-z]+:", path):
            continue
        assert (page.parent / path).exists(), f"{page.name}: {target}"


PRODUCED = re.compile(r"<!-- produced by: (\S+) -->\n(.*?)<!-- /produced -->", re.S)


def test_readme_numbers_appear_in_the_report():
    """Issue 20, finding 3: every decimal number of the README (code aside)
    appears in docs/RESULTS.md or docs/benchmarks.md, the generated report and
    the benchmark record; a block marked `<!-- produced by: FILE -->` takes its
    numbers from the committed script or test it names instead. Oracle: the
    report files' text, searched for each number as written."""
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    for source, _ in PRODUCED.findall(text):
        assert (ROOT / source).is_file(), source
    checked = PRODUCED.sub("", text)
    report = "".join(
        (ROOT / "docs" / name).read_text() for name in ("RESULTS.md", "benchmarks.md")
    )
    numbers = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", checked)
    assert len(numbers) > 20  # the results table and the prose are checked
    missing = sorted({n for n in numbers if n not in report})
    assert not missing, f"README numbers found in no report: {missing}"


def test_readme_test_command_is_what_ci_runs():
    commands = [
        code.strip()
        for language, code, _ in code_blocks((ROOT / "README.md").read_text())
        if language == "bash"
    ]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in commands
    script = re.fullmatch(r"bash (\S+)", ci)
    runs = (ROOT / script.group(1)).read_text() if script else ci
    assert "pytest -q" in runs


if __name__ == "__main__":
    page = pathlib.Path(sys.argv[1]).resolve()
    if pathlib.Path.cwd() == ROOT:  # by hand: keep the files it writes out of the repo
        os.chdir(tempfile.mkdtemp(prefix="test_docs_"))
    run_page(page)
