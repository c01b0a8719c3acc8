"""Messages handed to a plain function as nats-py reads them (``bus.direct_delivery``), on a real nats-server."""

from __future__ import annotations

from importlib.metadata import version

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bus.direct_delivery import subscribe_direct
from bus.fast_publish import NATS_PY_VERSION
from tests.conftest import eventually


def test_pinned_to_the_nats_py_whose_internals_it_uses() -> None:
    assert version("nats-py") == NATS_PY_VERSION, "re-check bus/direct_delivery.py against this nats-py, then bump"


async def test_every_message_reaches_the_handler_in_order_and_none_stays_pending(nc: NatsClient) -> None:
    seen: list[Msg] = []
    subscription = await subscribe_direct(nc, "direct.*", seen.append)
    for i in range(50):
        await nc.publish(f"direct.{i}", str(i).encode(), headers={"N": str(i)})
    await nc.flush()
    await eventually(lambda: len(seen) == 50)
    assert [m.data for m in seen] == [str(i).encode() for i in range(50)]
    assert [m.headers for m in seen] == [{"N": str(i)} for i in range(50)]
    assert (subscription.delivered, subscription.pending_msgs, subscription.pending_bytes) == (50, 0, 0)


async def test_a_failing_handler_leaves_the_connection_reading(nc: NatsClient) -> None:
    seen: list[bytes] = []

    def handle(msg: Msg) -> None:
        if msg.data == b"boom":
            raise ValueError("boom")
        seen.append(msg.data)

    await subscribe_direct(nc, "direct.fail", handle)
    for data in (b"1", b"boom", b"2"):
        await nc.publish("direct.fail", data)
    await nc.flush()
    await eventually(lambda: seen == [b"1", b"2"])
    assert nc.is_connected


async def test_unsubscribed_and_drained_like_any_subscription(nc: NatsClient) -> None:
    seen: list[Msg] = []
    first = await subscribe_direct(nc, "direct.gone", seen.append)
    await first.unsubscribe()
    second = await subscribe_direct(nc, "direct.drained", seen.append)
    await nc.publish("direct.drained", b"last")
    await nc.flush()
    await eventually(lambda: len(seen) == 1)
    await second.drain()
    await nc.publish("direct.gone", b"x")
    await nc.publish("direct.drained", b"x")
    await nc.flush()
    assert [m.data for m in seen] == [b"last"]
