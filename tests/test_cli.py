import os
import subprocess
import sys


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sparse_survey", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_cli_trains_on_digits():
    out = run("train", "--model", "mlp", "--dataset", "digits", "--epochs", "2",
              "--batch-size", "64", "--lr", "0.05", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "final test accuracy" in out.stdout and "images/s" in out.stdout


def test_help_documents_the_options():
    out = run("train", "--help")
    assert out.returncode == 0
    for option in ("--model", "--dataset", "--data-root", "--limit-per-class", "--epochs",
                   "--batch-size", "--lr", "--schedule", "--seed", "--device"):
        assert option in out.stdout


def test_missing_data_is_a_clear_error_not_a_traceback(tmp_path):
    out = run("train", "--data-root", str(tmp_path / "none"), "--epochs", "1",
              env={"SPARSE_SURVEY_DATA": "", "SPARSE_SURVEY_DATA_DIR": str(tmp_path / "d"),
                   "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert out.returncode == 2
    assert "CIFAR-10 was not found" in out.stderr and "Traceback" not in out.stderr
