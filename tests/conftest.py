"""Small shared fixtures. Keep this file minimal: test modules keep their own special fixtures."""

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
