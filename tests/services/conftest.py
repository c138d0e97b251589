"""The services' end-to-end tests borrow the queue's real worker and queuer fixtures."""

from tests.jobs.conftest import effects, queue_settings, run_queuer, start_worker  # noqa: F401
