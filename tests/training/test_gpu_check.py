"""bench/gpu_check.py on the CPU: the same code as the GPU check (throughput figures, device vs
CPU losses, save and resume) on the tiny config, as a smoke test."""

from bench import gpu_check


def test_gpu_check_runs_on_cpu(capsys):
    assert gpu_check.main(["--device", "cpu", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "model: tiny at (1,1,1), bf16" in out
    assert "| step s | tokens/s | TFLOP/s per device | MFU |" in out
    assert "gpu_check: PASS" in out
