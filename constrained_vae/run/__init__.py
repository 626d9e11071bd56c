"""One run: its settings (:mod:`~constrained_vae.run.settings`, :mod:`~constrained_vae.run.presets`), what it
updates (:mod:`~constrained_vae.run.trainee`), the loop (:mod:`~constrained_vae.run.loop`), and its folder
(:mod:`~constrained_vae.run.folder`, :mod:`~constrained_vae.run.summary`, :mod:`~constrained_vae.run.locks`,
:mod:`~constrained_vae.run.migrations`), and what a run shows (:mod:`~constrained_vae.run.images`,
:mod:`~constrained_vae.run.tensorboard`)."""
