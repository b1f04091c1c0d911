"""The suite's own guards: x64 stays off between tests, and what the code cites exists.

The x64 guard (conftest.py, autouse) is itself tested here, in a pytest run of its own
on two small test files, so a broken guard cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LEAKY_TESTS = textwrap.dedent("""
    import jax

    def test_leaves_x64_on():
        jax.config.update("jax_enable_x64", True)

    def test_runs_after_the_leak():
        pass
""")


def _pytest(tmp_path: Path, env: dict[str, str]) -> str:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leak.py").write_text(LEAKY_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(tmp_path / "test_leak.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return result.stdout + result.stderr


def test_x64_guard_catches_a_leak_and_the_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = _pytest(tmp_path, {**env, "JAX_PLATFORMS": "cpu"})
    assert "this test (or its fixture) left x64 on" in out, out
    assert "x64 is on before this test" in out, out  # the next test is stopped too
    out = _pytest(tmp_path, {**env, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1"})
    assert "unset JAX_ENABLE_X64" in out, out


def _texts():
    for pattern in ("tests/*.py", "jaxviz/**/*.py", "weights_port/*.py", "benchmarks/*.py",
                    "scripts/*", "*.md", "docs/*.md", "benchmarks/*.md", "notebooks/*.md"):
        for path in ROOT.glob(pattern):
            if path.is_file() and path.suffix in (".py", ".md", ".sh", ""):
                yield path, path.read_text(errors="replace")


def test_every_cited_document_is_in_the_repository():
    """Every Markdown file a source, test, script or document names exists in the repository
    (a design document outside it would leave its readers with a dead reference)."""
    missing = []
    for path, text in _texts():
        for ref in set(re.findall(r"(?<![\w/.])((?:[\w-]+/)*[\w-]+\.md)\b", text)):
            if not ((ROOT / ref).exists() or any(ROOT.glob(f"**/{ref}"))):
                missing.append(f"{path.relative_to(ROOT)} cites {ref}")
    assert not missing, missing


def test_every_shell_script_parses():
    """Every shell script of the repository parses (``bash -n``): some, such as
    benchmarks/gpu.sh, run only on machines the suite never sees."""
    scripts = sorted(p for d in ("scripts", "benchmarks", ".ci") for p in (ROOT / d).glob("*")
                     if p.is_file() and (p.suffix == ".sh" or p.read_text(errors="replace")
                                         .startswith("#!/usr/bin/env bash")))
    assert ROOT / "benchmarks" / "gpu.sh" in scripts and ROOT / "scripts" / "test.sh" in scripts
    for script in scripts:
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script.relative_to(ROOT)}: {out.stderr}"
