"""Every fenced block marked ``bash tested`` in README.md and docs/*.md runs, in the repository root, and succeeds.

A page's marked blocks run in order in one bash session (``set -euo pipefail``), with .venv/bin first on PATH, so a
block may use what an earlier one started or wrote. The session is its own process group: whatever a block starts
in the background is stopped when the page ends. Blocks without the mark (a real cluster's commands, ``make demo``)
are documentation only.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARK = "bash tested"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
PAGE_TIMEOUT_S = 240


def marked_blocks(text: str) -> list[str]:
    return [body for info, body in FENCE.findall(text) if info.strip() == MARK]


def pages() -> list[Path]:
    return [path for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
            if marked_blocks(path.read_text())]


def test_marked_blocks_are_found_and_unmarked_ones_are_not():
    text = "```bash tested\necho one\n```\n\n```bash\nmake demo\n```\n```bash tested\necho two\n```\n"
    assert marked_blocks(text) == ["echo one\n", "echo two\n"]
    assert REPO / "README.md" in pages()


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_the_marked_commands_of_a_page_succeed(page, tmp_path):
    blocks = marked_blocks(page.read_text())
    script = "set -euo pipefail\n" + "".join(
        f"echo '--- block {index + 1} of {page.name}' >&2\n{body}" for index, body in enumerate(blocks))
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONSAFEPATH": "1",
                        "DOCS_TMP": str(tmp_path)}
    process = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=PAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{page.name}: its commands ran past {PAGE_TIMEOUT_S}s:\n{output[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # stop what the blocks left running in the background
            os.killpg(process.pid, signal.SIGTERM)
    assert process.returncode == 0, f"{page.name}: a marked command failed:\n{output[-4000:]}"
