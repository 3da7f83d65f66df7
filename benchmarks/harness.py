"""Running one probe script on ember and on Ray, for the comparisons in this folder.

Ray runs from the virtual environment that ../shared/bench/compare_with_ray.py
creates (``$RAY_BENCH_VENV``, default /tmp/ray-bench-venv). A probe prints one
JSON line with its results.
"""
import json
import os
import subprocess
import sys

RAY_PYTHON = os.path.join(os.environ.get("RAY_BENCH_VENV", "/tmp/ray-bench-venv"),
                          "bin", "python")


def run_probe(probe: str, impl: str, *args: str, timeout: float = 1800,
              env: dict | None = None) -> dict:
    """Run ``probe`` with ``impl`` ("ember" or "ray") as argv[1]; return its JSON line.

    ``env``: variables to set for the probe, on top of this process's.
    """
    python = sys.executable if impl == "ember" else RAY_PYTHON
    if impl == "ray" and not os.path.exists(RAY_PYTHON):
        sys.exit(f"no Ray venv at {RAY_PYTHON}: run ../shared/bench/compare_with_ray.py once")
    out = subprocess.run([python, "-c", probe, impl, *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})})
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{impl} probe failed:\n{out.stderr[-3000:]}")


def implementations() -> list[str]:
    """ember and ray, or the one named by ``--only``."""
    if "--only" in sys.argv:
        return [sys.argv[sys.argv.index("--only") + 1]]
    return ["ember", "ray"]
