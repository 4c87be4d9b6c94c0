"""Small shared helpers (atomic file output, tables, seeding)."""
