"""SQLAlchemy models per tier, and the engines and sessions to reach them.

Importing the package registers every table on `Base.metadata` (migrations and tests rely on it).
"""

from models import (
    analytics,
    billing,
    campaigns,
    content,
    infrastructure,
    operations,
    queue,
    tenancy,
)
from models.base import Base

SCHEMAS = ("app", "content", "queue", "analytics")

__all__ = [
    "SCHEMAS",
    "Base",
    "analytics",
    "billing",
    "campaigns",
    "content",
    "infrastructure",
    "operations",
    "queue",
    "tenancy",
]
