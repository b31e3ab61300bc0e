"""Drift against the champion's reference profile, realized performance, and the retraining decision."""
