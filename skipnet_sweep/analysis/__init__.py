"""Analysis of a sweep: read runs back from MLflow, compare with published baselines, draw
the paper's figures and write a report.

Modules (imported on demand, so reading baselines does not pull in MLflow or matplotlib):

- ``baselines``: published results in ``analysis/baselines/*.csv``, validated.
- ``runs``: a sweep's child runs as one DataFrame, and their ``eval/`` artifacts.
- ``figures``: one function per figure; each writes PNG and PDF and returns its data.
- ``report``: every figure the runs support plus ``summary.md``, logged to the sweep.
"""
