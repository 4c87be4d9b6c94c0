#!/usr/bin/env bash
# GPU smoke test: runs tests/test_cuda_smoke.py (the `cuda` marker) and prints a short report: the device, each
# check with pass/fail/skip and its time, and the measured differences the checks print. Needs no data download
# (digits ships with scikit-learn); takes well under 5 minutes on one GPU (the NCCL checks need 2 GPUs).
#
#   bash scripts/cuda_smoke.sh            # log and JUnit XML go to a temporary folder
#   bash scripts/cuda_smoke.sh OUT_DIR    # ... or to OUT_DIR
# Exit code: pytest's (0 = every check passed or was skipped; 5 = none ran).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
PY="${PYTHON:-python}"

echo "== prunekit CUDA smoke test"
"$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else '-'}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"device {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
else:
    print("no CUDA device: every check will be skipped")
EOF

start=$(date +%s)
timeout 290 "$PY" -m pytest tests/test_cuda_smoke.py -m cuda -p no:cacheprovider -q -s -rs \
    --junitxml "$out/cuda_smoke.xml" >"$out/cuda_smoke.log" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
if [ "$rc" -eq 124 ]; then echo "TIMEOUT: the checks ran past 290 s"; fi

"$PY" - "$out/cuda_smoke.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("no JUnit report was written (see the log)")
    raise SystemExit(0)
for case in root.iter("testcase"):
    status, why = "pass", ""
    for tag, label in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "skip")):
        el = case.find(tag)
        if el is not None:
            status, why = label, (el.get("message") or "").splitlines()[0][:100] if el.get("message") else ""
            break
    print(f"{status:5}  {float(case.get('time', 0)):6.1f}s  {case.get('name')}" + (f"  ({why})" if why else ""))
EOF
grep -E "max (weight )?difference" "$out/cuda_smoke.log" | sed 's/^[.sFE]*/note: /' || true
echo "total ${elapsed}s; pytest exit code $rc; log: $out/cuda_smoke.log"
exit "$rc"
