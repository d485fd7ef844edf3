"""Downstream-task decontamination (MT-NLG): task 13-gram keys, corpus matching, cuts."""
