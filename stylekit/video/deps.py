"""The video extra's packages, imported on first use with a one-line error when missing.

PyAV (FFmpeg's libraries from wheels) and OpenCV are optional: photos need neither, so
`import stylekit` and `--help` work without them."""

from __future__ import annotations

import importlib
from types import ModuleType

from stylekit.errors import StylekitError

INSTALL_HINT = "pip install 'stylekit[video]'"


def require(module: str, package: str) -> ModuleType:
    """Import `module` (from the pip package `package`), or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StylekitError(
            f"video needs the {package} package, which is not installed: {INSTALL_HINT}"
        ) from None


def av() -> ModuleType:
    return require("av", "av (PyAV)")


def cv2() -> ModuleType:
    return require("cv2", "opencv-python-headless")
