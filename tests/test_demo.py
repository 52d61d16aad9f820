"""The README's first command: the local demo runs end to end and says where things went."""
import subprocess
import sys


def test_demo_drains_everything_reconciles_and_writes_a_report(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "scripts.demo", "--out", str(out), "--per-type", "20", "--sink", "sqlite"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = proc.stdout
    assert "Left in the queues: 0" in text
    assert "total                    85       85      80     5      85" in text
    assert "one per send" in text  # the late receipt merged into its reconciled row
    assert (out / "receipts.db").exists() and (out / "report.html").stat().st_size > 10_000
    assert "delivery rate" in text
