from __future__ import annotations

NAME = "fidelity_setup"
