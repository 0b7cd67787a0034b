"""Database: typed models, engine per process, unit of work, migrations."""
