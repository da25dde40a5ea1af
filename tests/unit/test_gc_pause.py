"""Pausing the cyclic garbage collector around bulk work (imports)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from alai.server import gc_pause


@pytest.fixture(autouse=True)
def collector_enabled():
    gc.enable()
    yield
    gc.enable()


def test_overlapping_pauses_resume_the_collector_when_the_last_one_ends():
    first, second = gc_pause.paused(), gc_pause.paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_the_collector_resumes_after_a_failure():
    @gc_pause.pausing
    async def failing():
        assert not gc.isenabled()
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(failing())
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with gc_pause.paused():
        pass
    assert not gc.isenabled()
