"""A failed test run says, even under ``-q``, where its clusters' logs are kept."""
import pathlib
import shutil
import re
import subprocess
import sys

TESTS = pathlib.Path(__file__).resolve().parents[2]


def _run_pytest(tmp_path, body: str) -> str:
    for name in ("conftest.py", "helpers.py"):
        (tmp_path / name).write_text((TESTS / name).read_text())
    (tmp_path / "test_sample.py").write_text(body)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    return done.stdout


def test_a_failed_run_names_its_kept_log_directory(tmp_path):
    out = _run_pytest(tmp_path, "def test_fails():\n    assert 1 == 2\n")
    match = re.search(r"are kept in (\S+)", out)
    assert match, out
    kept = pathlib.Path(match.group(1))
    assert kept.is_dir()
    shutil.rmtree(kept)


def test_a_passing_run_keeps_nothing_and_says_nothing(tmp_path):
    out = _run_pytest(tmp_path, "def test_passes():\n    assert 1 == 1\n")
    assert "kept in" not in out and "1 passed" in out
