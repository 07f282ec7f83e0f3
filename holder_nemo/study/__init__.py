"""``holderpo study``: seeded multi-arm comparisons of HölderPO p schedules and GRPO / GSPO / GMPO on the CPU reference
run, with 95 % confidence intervals over seeds (docs/study.md; the modules' roles are in docs/architecture.md)."""
