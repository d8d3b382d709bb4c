#!/usr/bin/env bash
# Execute the notebooks in place, saving their outputs (to commit them once the final weights
# are in medgpu/weights/). Usage: notebooks/run_all.sh [NOTEBOOK.ipynb ...]  (default: all here)
# Needs nbclient, nbformat and ipykernel (pip install -e ".[test]").
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

if [ -z "${MEDGPU_RANDOM_WEIGHTS:-}" ] && ! "$PY" -c \
    'import sys; from medgpu.codec.registry import weights_path; sys.exit(not weights_path().is_file())'; then
    echo "run_all.sh: the shipped weights (medgpu/weights/) are missing; outputs would be meaningless." >&2
    echo "            (MEDGPU_RANDOM_WEIGHTS=1 runs them with random weights, for checking only: do not commit those.)" >&2
    exit 1
fi

if [ "$#" -eq 0 ]; then
    set -- "$HERE"/[0-9]*.ipynb
fi

"$PY" - "$@" <<'PYEOF'
import sys
import time
from pathlib import Path

import nbclient
import nbformat

for name in sys.argv[1:]:
    path = Path(name).resolve()
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nbformat.write(nb, path)
    print(f"{path.name}: executed in {time.perf_counter() - t0:.1f} s, outputs saved", flush=True)
PYEOF
