"""The day report: one MLflow run per day in ``exfm-pipeline`` with a table per VM and plots.

``table`` is pure (rows, lift, markdown, headline, plots); ``day_report`` reads the day's runs
and gate decisions from MLflow and logs the report run.
"""
