"""The Jupyter gateway protocol: JupyterLab, nbclient and papermill on Workbench sessions."""
