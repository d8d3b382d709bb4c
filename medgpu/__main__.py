"""``python -m medgpu``: same as the ``medgpu`` command."""
from __future__ import annotations

from medgpu.cli import main

if __name__ == "__main__":
    main()
