"""`hookctl serve`: helpdesk events in over HTTP, stored before the 202, sent by the pipeline."""
