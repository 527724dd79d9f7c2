"""The per-process decode budget: pixels held while decoding, taken in the order asked for."""

import threading
import time

import pytest

from classification.serving.decode_budget import PixelBudget
from core.errors import ServiceBusy


@pytest.fixture
def budget(settings):
    settings.IMAGE_DECODE_PIXEL_BUDGET = 100
    settings.IMAGE_DECODE_WAIT = 5.0
    return PixelBudget()


def _wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _take(budget, pixels, order, name, release):
    with budget.held(pixels=pixels):
        order.append(name)
        release.wait(5)


def test_decodes_that_fit_together_hold_the_budget_at_once(budget):
    with budget.held(pixels=40), budget.held(pixels=60):
        assert budget.in_flight() == 100
    assert budget.in_flight() == 0


def test_an_image_larger_than_the_budget_decodes_alone(budget):
    with budget.held(pixels=250):
        assert budget.in_flight() == 250
    assert budget.in_flight() == 0


def test_a_decode_that_does_not_fit_waits_then_is_busy(budget, settings):
    settings.IMAGE_DECODE_WAIT = 0.2
    with budget.held(pixels=80):
        started = time.monotonic()
        with pytest.raises(ServiceBusy) as raised, budget.held(pixels=30):
            pass
        assert time.monotonic() - started >= 0.2
    assert raised.value.retry_after == 1
    assert budget.in_flight() == 0 and budget.waiting() == 0


def test_waiters_are_served_in_the_order_they_asked_even_when_a_later_one_would_fit(budget):
    """A large decode waiting for room is not overtaken by small ones that came after it."""
    order: list[str] = []
    release = {name: threading.Event() for name in ("first", "large", "small")}
    first = threading.Thread(target=_take, args=(budget, 60, order, "first", release["first"]))
    first.start()
    _wait_until(lambda: order == ["first"])
    large = threading.Thread(target=_take, args=(budget, 90, order, "large", release["large"]))
    large.start()
    _wait_until(lambda: budget.waiting() == 1)
    # 60 + 30 would fit, but the large decode asked first.
    small = threading.Thread(target=_take, args=(budget, 30, order, "small", release["small"]))
    small.start()
    _wait_until(lambda: budget.waiting() == 2)
    time.sleep(0.05)
    assert order == ["first"]

    release["first"].set()
    _wait_until(lambda: order == ["first", "large"])
    assert budget.in_flight() == 90 and budget.waiting() == 1  # 90 + 30 does not fit
    release["large"].set()
    _wait_until(lambda: order == ["first", "large", "small"])
    release["small"].set()
    for thread in (first, large, small):
        thread.join(5)
    assert budget.in_flight() == 0 and budget.waiting() == 0


def test_a_waiter_that_gives_up_lets_the_next_one_in(budget, settings):
    settings.IMAGE_DECODE_WAIT = 0.3
    order: list[str] = []
    outcomes: dict[str, str] = {}
    hold, done = threading.Event(), threading.Event()

    def impatient():
        try:
            with budget.held(pixels=90):
                outcomes["impatient"] = "decoded"
        except ServiceBusy:
            outcomes["impatient"] = "busy"

    holder = threading.Thread(target=_take, args=(budget, 50, order, "holder", hold))
    holder.start()
    _wait_until(lambda: order == ["holder"])
    waiter = threading.Thread(target=impatient)
    waiter.start()
    _wait_until(lambda: budget.waiting() == 1)
    settings.IMAGE_DECODE_WAIT = 5.0
    behind = threading.Thread(target=_take, args=(budget, 40, order, "behind", done))
    behind.start()
    # Behind the impatient one until it gives up, then in beside the holder.
    _wait_until(lambda: order == ["holder", "behind"])
    assert outcomes == {"impatient": "busy"}
    hold.set()
    done.set()
    for thread in (holder, waiter, behind):
        thread.join(5)
    assert budget.in_flight() == 0 and budget.waiting() == 0
