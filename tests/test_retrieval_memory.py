"""Memory stays bounded at NUS-WIDE scale: 2,100 queries x 193,734 items x 64 bits x 21 classes < 2 GB RSS."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import resource
import numpy as np
from saat.retrieval import evaluate_retrieval
rng = np.random.default_rng(0)
Q, M, K, C = 2100, 193734, 64, 21
q = np.where(rng.random((Q, K), dtype=np.float32) < 0.5, 1.0, -1.0).astype(np.float32)
db = np.where(rng.random((M, K), dtype=np.float32) < 0.5, 1.0, -1.0).astype(np.float32)
ql = (rng.random((Q, C)) < 0.1).astype(np.uint8)
dl = (rng.random((M, C)) < 0.1).astype(np.uint8)
res = evaluate_retrieval(q, db, ql, dl, topk=5000)  # mAP, full-ranking PR curve, P@N, radius curves
assert 0 < res.map < 1
# VmHWM is this process's own peak. ru_maxrss is not enough on Linux: a child created by fork + exec inherits
# the parent's high-water mark (pytest's, here) through exec.
try:
    status = open("/proc/self/status").read()
    print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))))
except (OSError, StopIteration):
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow  # a subprocess ranking 2,100 x 193,734 codes
def test_nus_wide_scale_evaluation_stays_under_2gb():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    peak_mb = int(out.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 2048, f"peak RSS {peak_mb:.0f} MB"
