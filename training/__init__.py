"""Training-set building, XGBoost training, evaluation, model registry and schedule."""
