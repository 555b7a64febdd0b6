"""The API's routes by topic: :mod:`.search`, :mod:`.images`, :mod:`.about` (stats, health, pages)."""
