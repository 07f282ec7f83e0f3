"""``holderpo study``: a seeded multi-arm comparison of HölderPO p schedules and the GRPO / GSPO / GMPO special
cases on the CPU reference run, with 95 % confidence intervals over seeds.

Modules: ``spec`` (arms, tasks, shared settings), ``runner`` (parallel, resumable runs), ``stats`` (intervals,
per-run summaries), ``report`` (study.json / study.md / study.png), ``cli`` (the command). It only drives the
reference run (``holder_nemo.reference``); nothing here touches the maths.
"""
