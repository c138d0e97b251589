"""Plans, subscriptions and payments in the API."""
