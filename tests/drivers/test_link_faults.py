"""Every link fault on every protocol: what a user sees is a bounded error naming the device,
then recovery; a damaged reply costs a retry, never a wrong value."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from rigs import RIGS, Rig, build

from twin.clock import Clock
from twin.errors import CommunicationError
from twin.sim import Plant


@pytest.fixture(params=RIGS)
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    r = await build(request.param, Plant(seed=5), Clock())
    yield r
    await r.close()


async def test_silent_device_is_reported_within_its_watchdog_and_recovers(rig: Rig) -> None:
    clock = Clock()
    await rig.probe()
    rig.server.link.silent = True
    t0 = clock.now()
    with pytest.raises(CommunicationError) as err:
        await rig.probe()
    elapsed = clock.now() - t0
    assert err.value.device.startswith(rig.driver.name)  # the alarm names the device
    watchdog = 2 * 0.5 * 3  # default: twice timeout x attempts
    assert 1.5 - 1e-9 <= elapsed <= watchdog, elapsed
    assert rig.driver.counters.timeouts >= 3
    rig.server.link.clear()
    await rig.probe()  # back as soon as the device answers again
    assert rig.driver.counters.failures == 1


async def test_every_other_reply_damaged_costs_retries_not_wrong_values(rig: Rig) -> None:
    clean = await rig.probe()
    rig.server.link.corrupt_every = 2
    for _ in range(6):
        got = await rig.probe()
        assert type(got) is type(clean)
    c = rig.driver.counters
    assert c.crc_errors + c.timeouts >= 3 and c.retries >= 3, c
    assert c.failures == 0


async def test_slow_replies_within_the_timeout_are_just_late(rig: Rig) -> None:
    clock = Clock()
    rig.server.link.delay_s = 0.2  # slow, but inside the 0.5 s timeout
    t0 = clock.now()
    await rig.probe()
    assert clock.now() - t0 >= 0.2 - 1e-9
    assert rig.driver.counters.timeouts == 0


async def test_replies_later_than_the_timeout_never_give_a_wrong_answer(rig: Rig) -> None:
    """A reply that comes after its timeout may meet a later request (RTU and ASCII have no
    transaction ids): the driver must reject what does not answer the request asked."""
    clock = Clock()
    expected = await rig.driver.identify()
    rig.server.link.delay_s = 0.6
    for _ in range(3):
        try:
            got = await rig.probe()
        except CommunicationError as exc:
            assert exc.device.startswith(rig.driver.name)
        else:
            assert got is not None
    rig.server.link.clear()
    await clock.sleep(5.0)  # the stragglers arrive and are dropped
    assert await rig.driver.identify() == expected
    await rig.probe()


async def test_controller_restarted_is_reconnected_on_the_next_call() -> None:
    clock = Clock()
    rig = await build("bioreactor-tcp", Plant(seed=5), clock)
    try:
        await rig.probe()
        await rig.server.stop()
        t0 = clock.now()
        with pytest.raises(CommunicationError, match="BR-TCP"):
            await rig.probe()
        assert clock.now() - t0 <= 2 * 0.5 * 3
        await rig.server.start()  # same port: the controller rebooted
        await rig.probe()
        assert rig.driver.counters.reconnects == 1
    finally:
        await rig.close()
