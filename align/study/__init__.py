"""Do the papers' claims hold? The pieces of ``scripts/reproduce.py``: the statistics that judge a claim
(:mod:`align.study.stats`), the runs of each comparison on the sort task (:mod:`align.study.runs`) and the
report (:mod:`align.study.results`). Results are in ``docs/results.md``.

It is part of the installed package, not of ``scripts/``, because its statistics are a public tool in their own
right (``align.study.stats``: verdicts against a smallest effect, the hierarchical bootstrap, the seeds a paired
power calculation asks for) and because its tests, like every other package's, import it by name; it sits in the
runs layer and reaches training and evaluation only through the runs (:mod:`align.pipeline`, :mod:`align.iterate`,
:mod:`align.evaluation.run`), never through the faces."""
