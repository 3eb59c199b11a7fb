"""Where the course's files live, wherever JupyterLab was started (lesson 00).

`ROOT`, `DATA_DIR` and `NOTEBOOKS_DIR` are looked up when first read, not at import, so importing this
module never fails. The course folder (the one holding notebooks/ and data/) is, in this order:

1. the folder named by the environment variable `CLIPCOURSE_ROOT`;
2. the checkout this package sits in (an editable install, or Python started in the checkout);
3. the working directory or a folder above it that holds notebooks/00_welcome.ipynb and data/
   (JupyterLab started inside the checkout, with clipcourse installed elsewhere).

When none is found, reading them raises `CourseFilesNotFoundError` saying what to do.
"""

import os
from pathlib import Path

ENV_VAR = "CLIPCOURSE_ROOT"
PACKAGE_DIR = Path(__file__).resolve().parent      # where clipcourse itself is installed
_DERIVED = {"ROOT": "", "DATA_DIR": "data", "NOTEBOOKS_DIR": "notebooks"}


class CourseFilesNotFoundError(FileNotFoundError):
    """The course's notebooks/ and data/ folders could not be found."""


def _holds_course(folder: Path) -> bool:
    """True if `folder` holds both a notebooks/ and a data/ folder."""
    return (folder / "notebooks").is_dir() and (folder / "data").is_dir()


def course_root() -> Path:
    """The course folder, the one holding notebooks/ and data/ (the module docstring says where it looks)."""
    named = os.environ.get(ENV_VAR, "")
    if named:
        root = Path(named).expanduser().resolve()
        if not _holds_course(root):
            raise CourseFilesNotFoundError(
                f"{ENV_VAR}={named!r} does not hold the course's notebooks/ and data/ folders; set {ENV_VAR} "
                f"to the folder of the course checkout that holds both, or unset it")
        return root
    if _holds_course(PACKAGE_DIR.parent):
        return PACKAGE_DIR.parent
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _holds_course(folder) and (folder / "notebooks" / "00_welcome.ipynb").is_file():
            return folder
    raise CourseFilesNotFoundError(
        f"clipcourse is installed at {PACKAGE_DIR}, away from the course's files, and neither that folder's "
        f"parent nor the working directory {cwd} or a folder above it holds the course's notebooks/ and data/. "
        f"Set the environment variable {ENV_VAR} to the course checkout (the folder holding notebooks/ and "
        f"data/), or run `pip install -e .` in that checkout, or start JupyterLab inside the checkout.")


def __getattr__(name):
    if name in _DERIVED:
        root = course_root()
        return root / _DERIVED[name] if _DERIVED[name] else root
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
