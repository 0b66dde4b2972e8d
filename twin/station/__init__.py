"""The operator station: the site's web page for its batches (``poc-twin station serve``)."""
