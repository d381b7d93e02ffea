"""Reporting on a sweep: read runs back from MLflow, compare with published baselines, draw
the paper's figures and write a study's report. ``python -m skipnet_sweep.report`` and the
scripts in the top-level ``analysis/`` folder are thin commands over this package.

Modules (imported on demand, so reading baselines does not pull in MLflow or matplotlib):

- ``baselines``: published results in the bundled ``reporting/baselines/*.csv``, validated.
- ``runs``: an experiment's or a sweep's child runs as one DataFrame, and their ``eval/``
  artifacts.
- ``figures``: the figure functions in one import; each writes PNG and PDF and returns its
  data. They live by family in ``frontier_macs`` (Pareto, Fig. 7) and ``frontier_latency``
  (sharing ``frontier``), ``tradeoff`` (Fig. 6/8/9), ``reduction`` (Fig. 4/5, Table 3),
  ``skipping`` (Fig. 11) and ``images`` (Fig. 10).
- ``style``: how every figure looks and names things; ``method_style`` /
  ``register_method_style`` give each method one colour and marker everywhere (a
  comparison of studies colours by study, ``series_style``; markers still say the method).
- ``common``, ``labels``: the figures' shared record, filters, file writing, label placer.
- ``study``: a study's report, every figure the runs support (``make_report``), and several
  sweeps or experiments compared on one figure (``make_comparison``).
- ``summary``: the report's ``summary.csv`` (one row per run) and the sections of ``summary.md``.
- ``cli``: what the reporting commands share (their options, their one-line errors).
"""
