"""Domains, VPS instances, sending IPs and email accounts in the API."""
