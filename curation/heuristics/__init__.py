"""The rule families of the `heuristics` stage: C4 (line and page rules), Gopher quality
and Gopher repetition. Each family module holds its config, its measures (computed for a
whole partition at once with Arrow kernels and numpy) and its ordered list of rules."""
