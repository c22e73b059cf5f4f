"""The job browser: Argo jobs in a web page (the HUST'17 paper's Figures 5 and 6) and a JSON API."""
