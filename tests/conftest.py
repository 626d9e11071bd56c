import os

import pytest
from hypothesis import settings

# Property tests run on 2 CPU cores in CI: bounded examples, no deadline flakiness.
settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=150, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# On a GPU machine `CVAE_REQUIRE_CUDA=1 python -m pytest` turns every skip for want of a CUDA device into a
# failure, so that a check on a GPU reports the CUDA tests as passed, never as skipped.
REQUIRE_CUDA = os.environ.get("CVAE_REQUIRE_CUDA") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_CUDA and report.skipped and "CUDA" in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"skipped for want of a CUDA device under CVAE_REQUIRE_CUDA=1: {report.longrepr}"
