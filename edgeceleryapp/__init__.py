"""edgecelery: an HPC edge service (Argo + Balsam, after "An Edge Service for Managing HPC
Workflows", HUST'17) built on Celery.

``celery -A edgeceleryapp worker`` finds the app in ``edgeceleryapp.celery``. This package
stays light to import, so the command line starts fast.
"""

__version__ = "0.1.0"
