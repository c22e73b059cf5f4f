"""Job messages: their schemas, intake into the database, and the Celery chains that run them."""
