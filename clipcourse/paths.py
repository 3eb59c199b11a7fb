"""Where the course's files live, wherever JupyterLab was started (lesson 00)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent     # the course checkout
DATA_DIR = ROOT / "data"                          # shipped sample data
NOTEBOOKS_DIR = ROOT / "notebooks"
