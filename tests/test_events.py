"""finetune.events: emit/listen and progress as events."""

import time

from finetune.events import Progress, emit, has_listeners, listening, track


def test_emit_reaches_listeners_only_while_they_listen():
    seen = []
    emit("info", "nobody hears this")
    with listening(seen.append):
        assert has_listeners()
        emit("info", "hello", answer=42)
    emit("info", "gone again")
    assert [(e.kind, e.message, e.data) for e in seen] == [("info", "hello", {"answer": 42})]
    assert not has_listeners()


def test_progress_sends_start_throttled_updates_and_an_end(monkeypatch):
    seen = []
    with listening(seen.append):
        with Progress("work", total=100, interval=3600) as bar:
            for i in range(100):
                bar.update(i + 1)  # throttled: only the last one is due
    done = [e.data["done"] for e in seen]
    assert done == [0, 100, None]  # start, the final update, the end of the bar
    assert {e.data["key"] for e in seen} == {"work"}


def test_progress_due_is_a_timer_even_without_listeners():
    bar = Progress("x", total=10, interval=0.0)
    assert not bar.active and bar.due(1)  # a cue for periodic checks (the trainer's NaN check)
    time.sleep(0)


def test_track_yields_every_item():
    seen = []
    with listening(seen.append):
        assert list(track(iter("abc"), "letters", total=3)) == ["a", "b", "c"]
    assert seen[-1].data["done"] is None
