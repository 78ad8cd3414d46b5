"""The "plug into my script" example runs offline with tiny settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "monitor_existing_module.py"


def test_example_runs_and_logs(tmp_path):
    spec = importlib.util.spec_from_file_location("monitor_existing_module", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(
        ["--epochs", "1", "--limit", "120", "--num-probes", "4", "--out", str(tmp_path)]
    )
    assert {
        f"saliency/{m}/{k}{se}"
        for m in ("gradcam", "gradcampp")
        for k in ("deletion", "overall")  # the monitor's default metrics
        for se in ("", "_se")  # each mean with its standard error
    } == set(results)
    assert all(-1.0 <= v <= 1.0 for v in results.values())
    assert list(tmp_path.rglob("saliency/*.png"))
    assert list(tmp_path.rglob("metrics.csv"))
