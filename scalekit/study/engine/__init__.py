"""The study engine: chains, families, rungs, promotion, the search over families, the retraining over
seeds, and the messages to the workers. Plain Python over the results table and Optuna; no backend."""
