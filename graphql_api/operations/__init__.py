"""Queue status and live subscriptions in the API."""
