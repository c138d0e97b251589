"""Templates, campaigns, sequence steps and leads in the API."""
