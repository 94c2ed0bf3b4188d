from tests.lab.conftest import lab_ready  # noqa: F401  (the same fail-with-reason check as the lab tests)
