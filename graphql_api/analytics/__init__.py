"""Daily statistics and deliverability in the API (read from the OLAP tier)."""
