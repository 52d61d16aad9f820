"""The README's first command: the local demo runs end to end and says where things went."""
import subprocess
import sys


def run_demo(out, *more):
    return subprocess.run([sys.executable, "-m", "scripts.demo", "--out", str(out), *more],
                          capture_output=True, text=True, timeout=240)


def test_demo_drains_everything_reconciles_and_writes_a_report(tmp_path):
    out = tmp_path / "demo"
    proc = run_demo(out, "--per-type", "20", "--sink", "sqlite")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = proc.stdout
    assert "Left in the queues: 0" in text
    assert "total                    85       85      80     5      85" in text
    assert "one per send" in text  # the late receipt merged into its reconciled row
    assert (out / "receipts.db").exists() and (out / "report.html").stat().st_size > 10_000
    assert "delivery rate" in text
    # A second run replaces its own earlier output, and says so.
    again = run_demo(out, "--per-type", "2", "--no-reconcile")
    assert again.returncode == 0 and f"Replacing the previous demo output in {out}" in again.stdout
    assert not (out / "receipts.db").exists() and (out / "receipts").is_dir()


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("keep me")
    proc = run_demo(precious, "--per-type", "2", "--no-reconcile")
    assert proc.returncode == 2
    assert "is not empty and was not made by this demo" in proc.stderr
    assert [p.name for p in precious.iterdir()] == ["chapter1.tex"]
    assert (precious / "chapter1.tex").read_text() == "keep me"
