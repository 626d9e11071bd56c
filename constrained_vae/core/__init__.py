"""The mathematics, on tensors: losses (:mod:`~constrained_vae.core.losses`), models and likelihoods,
the multiplier rules (:mod:`~constrained_vae.core.dual`), the objectives, one module each
(:mod:`~constrained_vae.core.objectives`), their schedules, the primal optimisers, and the
linear-Gaussian closed form. It imports nothing of the project but :mod:`constrained_vae.errors`."""
