"""The embedded default, as the README's main command uses it: a local server on SQLite, started once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.services import ROOT, free_port


def test_example_on_the_embedded_default(tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(PREFECT_AML_HOME=str(tmp / "home"), PREFECT_AML_SERVER_PORT=str(free_port()))
    example = ROOT / "examples" / "iris" / "run_pipeline.py"
    try:
        first = subprocess.run([sys.executable, str(example), "--experiment", "smoke"], env=env, cwd=tmp,
                               capture_output=True, text=True, timeout=400)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "PipelineRun Status: Finished" in first.stdout
        assert (tmp / "home" / "prefect" / "prefect.db").exists()  # SQLite under the home
        written = first.stdout.split("comparison written to ")[1].split()[0]
        result = json.loads(Path(written).read_text())
        assert result["best"] in ("centroid", "softmax") and result["bootstrap_rounds"] == 10

        # second command: same server (no new start), every step reused; a new parameter re-runs compare only
        second = subprocess.run([sys.executable, str(example), "--experiment", "smoke", "--pipeline-arg", "3"],
                                env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "starting the local Prefect server" not in second.stderr
        table = {line.split("│")[1].strip(): line for line in second.stdout.splitlines() if line.count("│") > 3}
        assert "yes" in table["prepare.py"] and "yes" in table["train.py"] and "yes" not in table["compare.py"]
    finally:
        subprocess.run([sys.executable, "-m", "prefect_aml.cli", "server", "stop"], env=env, capture_output=True)
