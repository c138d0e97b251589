"""The admin panel's entry point for platform staff: cross-tenant, audited."""
