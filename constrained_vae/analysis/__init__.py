"""What runs say, read from their folders: a sweep as a table (:mod:`~constrained_vae.analysis.sweep_table`),
the ε ↔ β map (:mod:`~constrained_vae.analysis.epsilon_beta`), how a multiplier rule tracks its budget
(:mod:`~constrained_vae.analysis.tracking`), and the study's tables (:mod:`~constrained_vae.analysis.study`).
Figures of all of them are :mod:`constrained_vae.plots`'."""
