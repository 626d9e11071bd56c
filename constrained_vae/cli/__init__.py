"""Every command line: a parser and a ``main`` per script. The scripts in ``experiments/`` and
``analysis/`` call these, and so does the installed ``cvae`` command (:mod:`constrained_vae.cli.main`: ``cvae run``
is ``experiments/run.py``); nothing in the library imports this package."""
