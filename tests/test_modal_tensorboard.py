"""TensorBoard on the offline Modal service: a run committed after the page first loaded appears on reload."""

from tensorboard_app import app, view, write_run


def test_a_run_written_after_the_page_loaded_appears_on_reload(modal_client):
    with app.run():
        write_run.remote("day")
        seen = view.remote("night")
    assert seen == {"first": ["day/tensorboard"], "reloaded": ["day/tensorboard", "night/tensorboard"]}
    logs = "".join(c.folder.joinpath("log.txt").read_text() for c in modal_client.containers)
    assert "reloading the outputs volume failed" not in logs
    assert modal_client.unanswered == [] and modal_client.faults == []
