"""Anomaly-detection estimators (scikit-learn style: fit / score_samples / save / load)."""
