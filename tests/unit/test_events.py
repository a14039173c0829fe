"""The event stream delivers typed events and survives broken listeners."""

from __future__ import annotations

from antrieb import events


def test_subscribe_emit_unsubscribe():
    seen: list[events.Event] = []
    with events.subscribed(seen.append):
        events.emit(events.ClusterStateChanged(cluster="c1", state=events.ClusterState.READY))
    events.emit(events.ClusterStateChanged(cluster="c1", state=events.ClusterState.DOWN))
    assert [e.state for e in seen] == [events.ClusterState.READY]


def test_a_failing_listener_does_not_break_the_producer(capsys):
    def broken(event):
        raise RuntimeError("widget bug")

    seen = []
    with events.subscribed(broken), events.subscribed(seen.append):
        events.emit(events.VMStateChanged(cluster="c", node="n", state=events.VMState.RUNNING))
    assert len(seen) == 1
    assert "widget bug" in capsys.readouterr().err


def test_events_round_trip_through_json():
    ev = events.ClusterReady(cluster="c", driver="qemu", accel="tcg", nodes={"node1": "10.0.0.1"},
                             seconds=1.2, node_seconds={"node1": 0.9})
    back = events.event_adapter.validate_json(ev.model_dump_json())
    assert back == ev and isinstance(back, events.ClusterReady)
