"""Training set split, XGBoost training and search, evaluation, and the promotion gate."""
