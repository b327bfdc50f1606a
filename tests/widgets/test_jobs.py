"""The job runner every widget uses: closing napari stops and waits for the live job only."""

import time

from qtpy.QtWidgets import QWidget

from napari_microdisk_sr._widgets._jobs import JobRunner


def _until_stopped(stop):
    while not stop.is_set():
        yield "working"
        time.sleep(0.01)
    return "stopped"


def test_napari_cancelling_a_finished_task_leaves_the_live_job_alone(make_napari_viewer, qtbot):
    make_napari_viewer()  # napari lists a job's task with the current viewer
    owner = QWidget()
    qtbot.addWidget(owner)
    runner = JobRunner(owner, name="test", wait_on_close_s=30)
    results = []

    def start(make_job):
        assert runner.start(make_job, on_event=lambda _e: None, on_finished=results.append, on_failed=print)
        return runner.worker

    finished = start(lambda _stop: iter(()))
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    live = start(_until_stopped)
    finished.quit()  # napari's cancel_all also calls the tasks that ended long ago
    qtbot.wait(100)
    assert runner.running  # the live job goes on: the stale cancel neither stopped nor waited for it

    live.quit()  # the live job's cancel stops it and waits until it has ended
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    assert results == [None, "stopped"]
