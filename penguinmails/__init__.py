"""PenguinMails: the process entry points (CLI), settings and the embedded development services."""
