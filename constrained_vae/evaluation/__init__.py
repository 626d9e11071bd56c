"""Disentanglement: the metrics (:mod:`~constrained_vae.evaluation.metrics`, one per module, each a
sampling wrapper over a pure-array core), the reference representations that calibrate them
(:mod:`~constrained_vae.evaluation.references`), and the scoring of trained run folders into
``RUN/metrics.json`` (:mod:`~constrained_vae.evaluation.scoring`)."""
