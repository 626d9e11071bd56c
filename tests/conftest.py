import os

from hypothesis import settings

# Property tests run on 2 CPU cores in CI: bounded examples, no deadline flakiness.
settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=150, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
