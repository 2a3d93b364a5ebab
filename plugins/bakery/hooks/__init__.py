"""Airflow hooks of the bakery (thin adapters: connections -> credentials and clients).

Import the hook modules directly (``from bakery.hooks.azure import AzureImageHook``): they import
their Airflow provider and SDK, which DAG files must not pay for at parse time.
"""
