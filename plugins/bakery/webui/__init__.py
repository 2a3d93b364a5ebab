"""The bakery's page in the Airflow UI: a FastAPI app the API server mounts (see plugins/bakery_plugin.py).

An Airflow adapter like ``bakery.operators``: Airflow's auth manager decides who sees what, Airflow's
metadata DB says what it recorded of the runs; the versions themselves come from the targets
(``bakery.gallery``).
"""
