"""Users, tenants, members, API keys and sign-in in the API."""
