"""``python -m engine_container``: see ``engine_container.cli``."""

from __future__ import annotations

from engine_container.cli import main

raise SystemExit(main())
