"""Every figure: one run's (:mod:`~constrained_vae.plots.run_figures`), a sweep's ε ↔ β analysis
(:mod:`~constrained_vae.plots.tradeoff`), a study's (:mod:`~constrained_vae.plots.study`) and the
multiplier rules' tracking (:mod:`~constrained_vae.plots.tracking`), each made and saved through
:mod:`~constrained_vae.plots.figure`; and the folders they are written into."""
