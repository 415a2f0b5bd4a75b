"""The admin service: REST API (/api/v1), cluster metrics and the web console."""
