"""The offline Modal service itself, through the real client: volumes as Modal's containers see them."""

import pytest
from volume_app import app, reload_then_read, reload_with_a_file_open, volume, write


@pytest.fixture
def running(modal_client):
    with app.run():
        yield modal_client


def test_a_commit_publishes_and_the_last_writer_wins(running):
    write.remote("a", "first")
    assert b"".join(volume.read_file("a")) == b"first"  # read from here, no container
    write.remote("a", "second")
    assert b"".join(volume.read_file("a")) == b"second"
    assert reload_then_read.remote("a") == "second"
    assert [entry.path for entry in volume.listdir("/")] == ["a"]


def test_a_reload_fails_while_a_file_of_the_volume_is_open(running):
    write.remote("held", "x")
    assert "there are open files preventing the operation" in reload_with_a_file_open.remote("held")
    assert running.faults == [] and running.unanswered == []
