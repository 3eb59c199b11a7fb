"""Small shared fixtures. Keep this file minimal: test modules keep their own special fixtures."""

import signal

import pytest

from clipcourse import data, text


@pytest.fixture(scope="session")
def tok():
    """The ShapesWorld tokenizer (context length 16)."""
    return text.Tokenizer.for_shapesworld()


@pytest.fixture(scope="session")
def tiny_world():
    """64 seeded training pairs, 32x32, about a third with two objects. Treat as read-only."""
    return data.ShapesWorld.generate(64, seed=123)


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process, as in a terminal: a test run started in the
    background by a shell inherits SIGINT ignored, and then Python installs no handler of its own."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
