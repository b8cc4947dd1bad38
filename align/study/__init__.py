"""Do the papers' claims hold? The pieces of ``scripts/reproduce.py``: the statistics that judge a claim
(:mod:`align.study.stats`), the runs of each comparison on the sort task (:mod:`align.study.runs`) and the
report (:mod:`align.study.results`). Results are in ``docs/results.md``."""
