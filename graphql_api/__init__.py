"""graphql_api."""
