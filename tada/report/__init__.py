"""Reports of a pipeline run for people: the run report (``reports/index.html``, one offline HTML file) and the
Prefect flow's markdown summary."""
