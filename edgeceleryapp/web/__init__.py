"""The job browser: Argo jobs in a web page (seed 000 Figures 5 and 6) and a JSON API."""
