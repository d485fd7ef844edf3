"""GPT-3-style quality filtering: a fastText classifier and Pareto sampling on its score."""
