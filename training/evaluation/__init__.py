"""Zero-, one- and few-shot evaluation (MT-NLG's) with EleutherAI's lm-evaluation-harness,
offline, on the tasks of the registry decontamination shares (curation/tasks)."""
