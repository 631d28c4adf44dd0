"""Running a test's Python script in a fresh process (e.g. to give it logical
CPU devices before TensorFlow starts), its result read back as JSON."""

import json
import os
import subprocess
import sys


def run_json(script: str, timeout: int = 300):
    """Runs `script` with this interpreter; the JSON its last stdout line prints."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
